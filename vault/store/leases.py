"""Leases: work that one process among all workers and replicas does at a time.

A lease is one row; taking it is one conditional statement (``UPDATE ... WHERE the holder is
me or the lease has run out``, or the ``INSERT`` of a row nobody has made yet), so of any
number of processes racing for it exactly one gets it. Clocks of the replicas are assumed
to agree to well under the lease's lifetime (NTP).
"""

from __future__ import annotations

from sqlalchemy import delete, insert, or_, update
from sqlalchemy.exc import IntegrityError

from vault.store import Database
from vault.store.tables import leases


class Leases:
    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew ``name`` until ``now + ttl``; ``False`` if another holds it."""

        def write() -> bool:
            with self.db.engine.begin() as conn:
                taken = conn.execute(
                    update(leases)
                    .where(
                        leases.c.name == name,
                        or_(leases.c.holder == holder, leases.c.expires_at < now),
                    )
                    .values(holder=holder, expires_at=now + ttl)
                ).rowcount
                if taken == 1:
                    return True
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(
                        insert(leases).values(name=name, holder=holder, expires_at=now + ttl)
                    )
            except IntegrityError:  # the row exists and someone else holds it
                return False
            return True

        return self.db.run_sync(write)

    def release(self, name: str, holder: str) -> None:
        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

        self.db.run_sync(write)
