"""Message ids of opened partner messages, kept until they could no longer pass the clock check."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from vault.errors import BadRequest
from vault.store import Database
from vault.store.tables import seen_messages

PRUNE_INTERVAL = 60.0


class SeenMessages:
    """One INSERT per opened message: a second one of the same id, on any replica, fails on
    the primary key, so a replayed message is refused exactly once it was accepted once."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pruned = 0.0

    async def remember(self, partner: str, message_id: str, expires_at: float, now: float) -> None:
        prune = now - self._pruned > PRUNE_INTERVAL

        def write() -> bool:
            try:
                with self.db.engine.begin() as conn:
                    if prune:
                        conn.execute(delete(seen_messages).where(seen_messages.c.expires_at < now))
                    conn.execute(
                        insert(seen_messages).values(
                            partner=partner, message_id=message_id, expires_at=expires_at
                        )
                    )
            except IntegrityError:
                return False
            return True

        if not await self.db.run(write):
            raise BadRequest("message replayed")
        if prune:
            self._pruned = now
