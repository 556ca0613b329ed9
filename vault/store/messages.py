"""Message ids of opened partner messages, kept until they could no longer pass the clock check."""

from __future__ import annotations

from vault.errors import BadRequest
from vault.store import Database
from vault.store.once import Once
from vault.store.tables import seen_messages


class SeenMessages:
    """A replayed message is refused once it was accepted once, on any replica."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._once = Once(db, seen_messages)

    async def remember(self, partner: str, message_id: str, expires_at: float, now: float) -> None:
        if not await self._once.first(
            now, partner=partner, message_id=message_id, expires_at=expires_at
        ):
            raise BadRequest("message replayed")
