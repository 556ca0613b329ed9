"""How many data keys each key version has wrapped, and the rotation that bound forces.

Data keys are wrapped with AES-GCM under random 96-bit IVs (docs/envelope.md). NIST SP
800-38D §8.3 allows one key at most 2^32 invocations with random IVs: past that, the chance
that two wraps share an IV — which would expose their XOR and GCM's authentication key —
exceeds 2^-32. So every wrap is counted, and a version is rotated away from once it has
wrapped ``ROTATE_AT`` = 2^30 data keys, and refused for new wraps at ``REFUSE_AT`` = 2^31.

The counts are kept in memory on the hot path (a dict update per wrap, no database round
trip) and added to ``key_versions.wraps`` in the background about once a second; each
flush also brings back the totals other replicas have added. A database restored from an
older copy, or a replica's last unflushed second lost with it, undercounts: the margin
between ``ROTATE_AT`` and 2^32 (3 x 2^30, about 3.7 days of wraps at 10,000 a second) is
what such a loss may be before the bound is at risk. No nonce depends on these counts; they
only decide when a version has been used enough.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from vault.errors import KeyVersionUnavailable, NotFound, VaultError
from vault.keys import Key, KeyVersion
from vault.store.keys import KeyStore

log = logging.getLogger("vault.usage")

IV_LIMIT = 2**32  # SP 800-38D §8.3: invocations per key with random 96-bit IVs
ROTATE_AT = 2**30
REFUSE_AT = 2**31
FLUSH_INTERVAL = 1.0  # seconds between background flushes while wraps happen

Slot = tuple[str, int]  # (key name, version)


class WrapCounter:
    """Counts wraps per key version; rotates a latest version that reached ``rotate_at``
    through ``rotate(name, if_latest=version)``, so replicas that all see it rotate it once."""

    def __init__(
        self,
        store: KeyStore,
        rotate: Callable[[str, int], object],
        *,
        rotate_at: int = ROTATE_AT,
        refuse_at: int = REFUSE_AT,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._store = store
        self._rotate = rotate
        self.rotate_at = rotate_at
        self.refuse_at = refuse_at
        self._interval = flush_interval
        self._lock = threading.Lock()
        self._pending: dict[Slot, int] = defaultdict(int)  # counted here, not yet flushed
        self._known: dict[Slot, int] = {}  # totals the database reported at the last flush
        self._latest: dict[str, int] = {}  # each key's latest version, as last charged
        self._flushing = False
        self._last_flush = time.monotonic()

    def charge(self, key: Key, versions: Sequence[KeyVersion]) -> None:
        """Count one wrap per entry of ``versions``, before the wraps are made. Refuses the
        whole call if a version has reached ``refuse_at``."""
        with self._lock:
            self._latest[key.name] = key.latest_version
            for v in versions:
                slot = (key.name, v.version)
                used = max(v.wraps, self._known.get(slot, 0)) + self._pending[slot]
                if used >= self.refuse_at:
                    raise KeyVersionUnavailable(
                        f"key version {v.version} has wrapped as many data keys as it may; "
                        "rotate the key"
                    )
                self._pending[slot] += 1
            due = not self._flushing and time.monotonic() - self._last_flush >= self._interval
            if due:
                self._flushing = True
        if due:
            threading.Thread(target=self.flush, name="wrap-counts", daemon=True).start()

    def used(self, name: str, version: KeyVersion) -> int:
        """Wraps under ``version`` as this process knows them."""
        slot = (name, version.version)
        with self._lock:
            return max(version.wraps, self._known.get(slot, 0)) + self._pending.get(slot, 0)

    def flush(self) -> None:
        """Add this process's counts to the database, learn the totals, and rotate every
        latest version that reached ``rotate_at``. Runs off the hot path (a background thread,
        or at close); a failure keeps the counts for the next flush."""
        with self._lock:
            pending = {slot: n for slot, n in self._pending.items() if n}
            self._pending.clear()
            self._flushing = True
        try:
            totals = self._store.add_wraps(pending) if pending else {}
        except VaultError:
            log.warning("wrap counts not saved (database unavailable); kept for the next try")
            with self._lock:
                for slot, n in pending.items():
                    self._pending[slot] += n
            totals = {}
        finally:
            with self._lock:
                self._flushing = False
                self._last_flush = time.monotonic()
        with self._lock:
            for slot, total in totals.items():
                self._known[slot] = max(self._known.get(slot, 0), total)
            due = [
                (name, number)
                for (name, number), total in self._known.items()
                if total >= self.rotate_at and self._latest.get(name) == number
            ]
        for name, number in due:
            self._rotate_away(name, number)

    def _rotate_away(self, name: str, number: int) -> None:
        try:
            self._rotate(name, number)
        except NotFound:  # deleted meanwhile: nothing left to count
            with self._lock:
                self._latest.pop(name, None)
                for slot in [s for s in self._known if s[0] == name]:
                    del self._known[slot]
            return
        except VaultError as exc:  # tried again at the next flush that sees the bound
            log.warning("could not rotate key %r away from v%d: %s", name, number, exc)
            return
        log.info("key %r: v%d reached %d wraps, rotated", name, number, self.rotate_at)
        with self._lock:
            if self._latest.get(name) == number:
                del self._latest[name]
