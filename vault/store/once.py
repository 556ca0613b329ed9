"""Things that may happen once across every replica: one INSERT on a primary key each.

A second INSERT of the same key, on any replica sharing the database, fails on the key, so
exactly one of any number of racing requests is told it came first. Rows carry the time
after which they no longer matter (``expires_at``) and are pruned along the way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete, insert
from sqlalchemy.exc import IntegrityError

from vault.store import Database

PRUNE_INTERVAL = 60.0


class Once:
    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self._table = table
        self._pruned = 0.0

    async def first(self, now: float, **row: Any) -> bool:
        """Record ``row`` (which holds ``expires_at``); ``False`` if it was recorded before."""
        prune = now - self._pruned > PRUNE_INTERVAL
        table = self._table

        def write() -> bool:
            try:
                with self.db.engine.begin() as conn:
                    if prune:
                        conn.execute(delete(table).where(table.c.expires_at < now))
                    conn.execute(insert(table).values(**row))
            except IntegrityError:
                return False
            return True

        first = await self.db.run(write)
        if prune:
            self._pruned = now
        return first
