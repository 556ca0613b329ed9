"""Revoked service tokens, and the generation number replicas poll to notice a new one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from vault.store import Database
from vault.store.tables import revocation_generation, token_revocations


@dataclass(frozen=True, slots=True)
class Revocation:
    service: str
    jti: str | None  # one token; None: every token of the service issued before ...
    issued_before: float | None
    expires_at: float  # after this no token it names could be accepted anyway
    revoked_at: float
    actor: str


class RevocationStore:
    """Synchronous statements (the caller picks the thread); ``StoreUnavailable`` on failure."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def generation(self) -> int:
        def query() -> int:
            with self.db.engine.connect() as conn:
                return int(
                    conn.execute(
                        select(revocation_generation.c.generation).where(
                            revocation_generation.c.id == 1
                        )
                    ).scalar_one()
                )

        return self.db.run_sync(query)

    def active(self, now: float) -> tuple[int, list[Revocation]]:
        """The generation and every revocation that still matters, read together."""

        def query() -> tuple[int, list[Revocation]]:
            with self.db.engine.begin() as conn:
                generation = conn.execute(
                    select(revocation_generation.c.generation).where(
                        revocation_generation.c.id == 1
                    )
                ).scalar_one()
                rows = conn.execute(
                    select(
                        token_revocations.c.service,
                        token_revocations.c.jti,
                        token_revocations.c.issued_before,
                        token_revocations.c.expires_at,
                        token_revocations.c.revoked_at,
                        token_revocations.c.actor,
                    )
                    .where(token_revocations.c.expires_at >= now)
                    .order_by(token_revocations.c.id)
                ).all()
            return int(generation), [Revocation(*row) for row in rows]

        return self.db.run_sync(query)

    def add(self, revocation: Revocation) -> None:
        """Keep ``revocation`` and bump the generation, in one transaction (the generation
        is written first: its row lock orders concurrent revocations)."""

        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(revocation_generation)
                    .where(revocation_generation.c.id == 1)
                    .values(generation=revocation_generation.c.generation + 1)
                )
                conn.execute(
                    delete(token_revocations).where(
                        token_revocations.c.expires_at < revocation.revoked_at
                    )
                )
                conn.execute(
                    insert(token_revocations).values(
                        service=revocation.service,
                        jti=revocation.jti,
                        issued_before=revocation.issued_before,
                        expires_at=revocation.expires_at,
                        revoked_at=revocation.revoked_at,
                        actor=revocation.actor,
                    )
                )

        self.db.run_sync(write)
