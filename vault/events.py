"""Key lifecycle events: what officers and the vault itself did to keys, and who did it.

Every change to a key (create, rotate, configure, trim, delete), every approval and every
revocation or policy reload is one :class:`LifecycleEvent`, handed to an :class:`EventSink`.
The audit chain is the sink in a running vault; until it is wired in, events go to the
structured log (:class:`LogSink`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("vault.events")

Detail = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    kind: str  # "key.create", "key.rotate", "key.config", "key.trim", "key.delete", ...
    actor: str  # the officer's identity, or "vault" for what the vault did by itself
    key: str | None = None
    version: int | None = None
    details: Mapping[str, Detail] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class EventSink(Protocol):
    def emit(self, event: LifecycleEvent) -> None:
        """Keep the event; raise if it cannot be kept (the action then counts as failed)."""


class LogSink:
    """Events as structured log lines."""

    def emit(self, event: LifecycleEvent) -> None:
        subject = f" {event.key}" if event.key else ""
        subject += f" v{event.version}" if event.version is not None else ""
        log.info(
            "%s%s by %s",
            event.kind,
            subject,
            event.actor,
            extra={
                "event": {
                    "kind": event.kind,
                    "actor": event.actor,
                    "key": event.key,
                    "version": event.version,
                    "details": dict(event.details),
                    "at": event.at,
                }
            },
        )
