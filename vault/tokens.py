"""Service tokens beyond their signature: single use, and revocation by the security officers.

Single use: a grant may mark operations single-use (``single_use = true`` in
``policies/services.toml``); a token that does one spends its ``jti``, once across every
replica (an INSERT on the primary key ``(service, jti)``: ``vault.store.once``). The row is
kept until the token expires.

Revocation: an officer revokes one token by its ``jti``, or every token of a service issued
before a time (that one under dual control: two officers approve). Each process keeps the
list in memory and polls one generation number at most once a second, reading the list again
only when it moved; a request never waits for the database unless the list is older than
``max_stale`` (two seconds), and then it waits for a fresh read or fails (503). So a
revocation takes effect on every replica within about two seconds, cache of verified tokens
included, at the cost of one tiny query per process per second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from vault.approvals import Action, Authority, DualControl
from vault.errors import Forbidden, Unauthorized
from vault.events import EventSink, LifecycleEvent, LogSink
from vault.flights import Flights
from vault.store import Database
from vault.store.once import Once
from vault.store.tables import used_tokens
from vault.store.tokens import Revocation, RevocationStore

if TYPE_CHECKING:
    from vault.auth import Principal

log = logging.getLogger("vault.tokens")

POLL_INTERVAL = 1.0  # seconds between two looks at the generation, per process
MAX_STALE = 2.0  # past this a request waits for a fresh read (or fails closed)


class SpentTokens:
    """Single-use tokens: the first use of a ``jti`` wins, on any replica."""

    def __init__(self, db: Database) -> None:
        self._once = Once(db, used_tokens)

    async def spend(self, principal: Principal, now: float | None = None) -> None:
        first = await self._once.first(
            time.time() if now is None else now,
            service=principal.service.name,
            jti=principal.token_id,
            expires_at=principal.expires_at,
        )
        if not first:
            raise Unauthorized("token already used (single-use operation)")


class RevocationList:
    """The revoked tokens, as this process last read them."""

    def __init__(
        self,
        store: RevocationStore,
        *,
        interval: float = POLL_INTERVAL,
        max_stale: float = MAX_STALE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.interval = interval
        self.max_stale = max(max_stale, interval)
        self._clock = clock
        self._read_at = -math.inf
        self._generation: int | None = None
        self._tokens: frozenset[tuple[str, str]] = frozenset()
        self._before: dict[str, float] = {}
        self._reading: Flights[None, None] = Flights()  # the read in flight, if any

    async def fresh(self) -> None:
        """Make sure the list is recent enough to judge a token by."""
        age = self._clock() - self._read_at
        if age < self.interval:
            return
        # A read that fails is logged in _read (and collected by Flights): none need wait.
        reading = self._reading.join(None, self._read)
        if age < self.max_stale:
            return  # recent enough: the read goes on in the background
        await asyncio.shield(reading)

    async def _read(self) -> None:
        started = self._clock()
        try:
            await self.store.db.run(self.refresh_sync)
            self._read_at = started
        except Exception as exc:
            log.warning("could not read the token revocations: %s", type(exc).__name__)
            raise

    def refresh_sync(self) -> None:
        """Read the generation; read the list again only if it moved."""
        generation = self.store.generation()
        if generation == self._generation:
            return
        generation, revocations = self.store.active(time.time())
        tokens = set()
        before: dict[str, float] = {}
        for r in revocations:
            if r.jti is not None:
                tokens.add((r.service, r.jti))
            elif r.issued_before is not None:
                before[r.service] = max(before.get(r.service, -math.inf), r.issued_before)
        self._tokens, self._before, self._generation = frozenset(tokens), before, generation

    def check(self, principal: Principal) -> None:
        name = principal.service.name
        if (name, principal.token_id) in self._tokens or principal.issued_at < self._before.get(
            name, -math.inf
        ):
            raise Unauthorized("token revoked", service=name)


class Revoker:
    """What the security officers do (``hsm-vault tokens ...``); each revocation goes into
    the audit chain."""

    def __init__(
        self,
        store: RevocationStore,
        max_lifetime: int,
        leeway: int,
        *,
        events: EventSink | None = None,
        dual_control: DualControl | None = None,
    ) -> None:
        self.store = store
        self.events: EventSink = events or LogSink()
        self.dual_control = dual_control
        # No token of ours lives longer: past it a revocation has nothing left to refuse.
        self._horizon = max_lifetime + leeway

    def revoke_token(
        self, service: str, jti: str, by: Authority, expires_at: float | None = None
    ) -> Revocation:
        """One token of ``service``, by its ``jti``."""
        now = time.time()
        revocation = Revocation(
            service=service,
            jti=jti,
            issued_before=None,
            expires_at=expires_at if expires_at is not None else now + self._horizon,
            revoked_at=now,
            actor=by.actor,
        )
        self.store.add(revocation)
        self.events.emit(
            LifecycleEvent("tokens.revoke", by.actor, details={"service": service, "jti": jti})
        )
        return revocation

    def revoke_service(self, service: str, before: float, by: Authority) -> Revocation:
        """Every token of ``service`` issued before ``before``: only under two officers'
        approval (``by.approval``, an approval request for ``service.revoke_tokens``)."""
        action = Action.revoke_tokens(service)
        if self.dual_control is None:
            raise Forbidden(f"{action.describe()} needs dual control, which is not set up here")
        now = time.time()
        revocation = Revocation(
            service=service,
            jti=None,
            issued_before=before,
            expires_at=max(before, now) + self._horizon,
            revoked_at=now,
            actor=by.actor,
        )
        with self.dual_control.authorize(by.approval, action, by.actor) as approvers:
            self.store.add(revocation)
        self.events.emit(
            LifecycleEvent(
                "tokens.revoke_service",
                by.actor,
                details={
                    "service": service,
                    "before": before,
                    "approval": by.approval or "",
                    "approved_by": ",".join(approvers),
                },
            )
        )
        return revocation

    def active(self) -> list[Revocation]:
        return self.store.active(time.time())[1]
