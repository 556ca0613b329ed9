"""Automatic rotation: each key with an ``auto_rotate_period`` gets a new version once its
latest version is that old (Vault's rule), exactly once per period however many workers
and replicas serve.

Every worker runs :meth:`AutoRotation.run` in the background; each pass, only the process
holding the ``auto-rotate`` lease (``vault.store.leases``) looks for due keys, the others do
nothing. The lease is not what makes rotation exactly-once, though: a rotation is made only
from the version that was found due (``KeyRegistry.rotate_from``: a conditional update), so
even two processes that both believe they hold the lease — a clock jump, a pause longer
than the lease — produce one new version, and the next is due a whole period after it.
Each rotation is a ``key.rotate`` lifecycle event by the ``vault``, like a manual one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable

from vault.errors import NotFound, VaultError
from vault.registry import VAULT, KeyRegistry
from vault.store.leases import Leases

log = logging.getLogger("vault.rotation")

LEASE = "auto-rotate"
_LEASE_INTERVALS = 3  # the lease outlives a holder that misses two passes


class AutoRotation:
    def __init__(
        self,
        registry: KeyRegistry,
        leases: Leases,
        interval: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.leases = leases
        self.interval = interval
        self.holder = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._clock = clock

    def sweep(self) -> list[tuple[str, int]]:
        """One pass: if this process holds the lease, rotate every key that is due. The
        keys rotated, with their new latest version."""
        now = self._clock()
        if not self.leases.acquire(LEASE, self.holder, self.interval * _LEASE_INTERVALS, now):
            return []
        rotated = []
        for name, latest in self.registry.store.rotation_due(now):
            try:
                key = self.registry.get_sync(name)
            except NotFound:  # deleted meanwhile
                continue
            newest = key.versions.get(key.latest_version)
            if (
                key.latest_version != latest
                or newest is None
                or newest.created_at + key.auto_rotate_period > self._clock()
            ):
                continue  # rotated meanwhile (by an officer, or a previous holder)
            made = self.registry.rotate_from(key, by=VAULT, trigger="auto_rotate_period")
            if made is not None:
                rotated.append((name, made.latest_version))
        return rotated

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled. Nothing here may stop the
        worker: a pass that fails (HSM or database away) is logged and tried again."""
        try:
            while True:
                try:
                    for name, version in await asyncio.to_thread(self.sweep):
                        log.info("automatic rotation: %s is now at v%d", name, version)
                except VaultError as exc:
                    log.warning("automatic rotation pass failed: %s", exc)
                except Exception:
                    log.exception("automatic rotation pass failed unexpectedly")
                # A little jitter keeps the workers' passes from lining up.
                await asyncio.sleep(self.interval * (0.9 + 0.2 * random.random()))  # noqa: S311
        finally:
            await asyncio.to_thread(self._release)

    def _release(self) -> None:
        """Hand the lease on at shutdown, so another process takes over at its next pass."""
        try:
            self.leases.release(LEASE, self.holder)
        except VaultError:
            log.debug("could not release the automatic-rotation lease", exc_info=True)
