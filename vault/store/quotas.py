"""Quota counters shared by every replica: a fixed window is one upsert, a sliding window one
locked row holding the times of the requests it admitted.

Both start their transaction with a write, so SQLite takes its write lock at once (a read
first would have to upgrade, and fail, under concurrent writers) and PostgreSQL locks the
row: two replicas charging the same scope queue up, and neither can over-admit.
"""

from __future__ import annotations

import math
import struct

from sqlalchemy import case, or_, update

from vault.policy import QuotaRule
from vault.store import Database
from vault.store.tables import quota_counters, quota_windows

_STAMP = struct.Struct(">d")


def _pack(stamps: list[float]) -> bytes:
    return struct.pack(f">{len(stamps)}d", *stamps)


def _unpack(blob: bytes) -> list[float]:
    return [s for (s,) in _STAMP.iter_unpack(blob)]


class QuotaStore:
    """Synchronous statements (the caller picks the thread); ``StoreUnavailable`` on failure."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def charge(self, rule: QuotaRule, scope: str, cost: int, now: float) -> float | None:
        """Count ``cost`` requests against ``rule`` for ``scope``: ``None`` if admitted
        (and counted), else the seconds until they would be (nothing is counted)."""
        if cost > rule.limit:
            return float(rule.window)
        charge = self._sliding if rule.sliding else self._fixed
        return self.db.run_sync(lambda: charge(rule, scope, cost, now))

    def _fixed(self, rule: QuotaRule, scope: str, cost: int, now: float) -> float | None:
        start = math.floor(now / rule.window) * rule.window
        end = start + rule.window
        t = quota_counters
        stmt = self.db.upsert(t).values(
            rule=rule.name, scope=scope, window_start=start, count=cost, expires_at=end
        )
        # A replica whose clock is behind keeps counting in the newer window it finds.
        newer = stmt.excluded.window_start > t.c.window_start
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.rule, t.c.scope],
            set_={
                "count": case((newer, cost), else_=t.c.count + cost),
                "window_start": case((newer, stmt.excluded.window_start), else_=t.c.window_start),
                "expires_at": case((newer, stmt.excluded.expires_at), else_=t.c.expires_at),
            },
            where=or_(newer, t.c.count + cost <= rule.limit),
        ).returning(t.c.count)
        with self.db.engine.begin() as conn:
            admitted = conn.execute(stmt).first()
        return None if admitted is not None else max(end - now, 1.0)

    def _sliding(self, rule: QuotaRule, scope: str, cost: int, now: float) -> float | None:
        t = quota_windows
        lock = self.db.upsert(t).values(rule=rule.name, scope=scope, stamps=b"", expires_at=now)
        lock = lock.on_conflict_do_update(
            index_elements=[t.c.rule, t.c.scope], set_={"expires_at": t.c.expires_at}
        ).returning(t.c.stamps)
        with self.db.engine.begin() as conn:
            blob = conn.execute(lock).scalar_one()
            # Sorted: replicas' clocks differ a little, so stamps may arrive out of order.
            live = sorted(s for s in _unpack(bytes(blob)) if s > now - rule.window)
            over = len(live) + cost - rule.limit
            if over > 0:
                # Admitted once the ``over`` oldest stamps have left the window.
                return max(live[over - 1] + rule.window - now, 1.0)
            live.extend([now] * cost)
            conn.execute(
                update(t)
                .where(t.c.rule == rule.name, t.c.scope == scope)
                .values(stamps=_pack(live), expires_at=max(live) + rule.window)
            )
        return None

    def prune(self, now: float) -> None:
        """Forget windows that ended (they admit nothing and refuse nothing any more)."""

        def write() -> None:
            with self.db.engine.begin() as conn:
                for table in (quota_counters, quota_windows):
                    conn.execute(table.delete().where(table.c.expires_at < now))

        self.db.run_sync(write)
