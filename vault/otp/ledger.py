"""The replay ledger: per seed, the last accepted position and the consecutive failures.

Acceptance is one conditional ``UPDATE ... WHERE last_position < :position``: of any number
of racing requests, on any number of replicas sharing the database, exactly one moves the
position, and only that one is told ``valid``.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from vault import db
from vault.errors import StoreUnavailable


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REPLAYED = "replayed"
    LOCKED = "locked"
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class LedgerState:
    last_position: int
    failures: int
    locked_until: float


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int = 5
    lockout_seconds: int = 300


class ReplayLedger:
    def __init__(self, engine: Engine, policy: LockoutPolicy) -> None:
        self._engine = engine
        self._policy = policy

    def state(self, seed_id: bytes) -> LedgerState | None:
        with self._engine.connect() as conn:
            row = (
                conn.execute(select(db.otp_ledger).where(db.otp_ledger.c.seed_id == seed_id))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return LedgerState(row["last_position"], row["failures"], row["locked_until"])

    def accept(
        self, seed_id: bytes, key_name: str, position: int | None, now: float | None = None
    ) -> Outcome:
        """Move the seed's position to ``position`` if it is ahead and the seed not locked.

        ``position=None`` is for OCRA suites with neither counter nor time: nothing orders
        their responses (the challenge's uniqueness is the caller's), so only the lock and
        the failure count apply.
        """
        now = time.time() if now is None else now
        table = db.otp_ledger
        conditions = [table.c.seed_id == seed_id, table.c.locked_until <= now]
        values: dict[str, object] = {"failures": 0, "updated_at": now}
        if position is not None:
            conditions.append(table.c.last_position < position)
            values["last_position"] = position
        try:
            for _ in range(3):
                with self._engine.begin() as conn:
                    moved = conn.execute(update(table).where(*conditions).values(**values)).rowcount
                    if moved == 1:
                        return Outcome.ACCEPTED
                    row = conn.execute(
                        select(table.c.last_position, table.c.locked_until).where(
                            table.c.seed_id == seed_id
                        )
                    ).first()
                    if row is not None:
                        return Outcome.LOCKED if row.locked_until > now else Outcome.REPLAYED
                try:
                    with self._engine.begin() as conn:
                        conn.execute(
                            insert(table).values(
                                seed_id=seed_id,
                                key_name=key_name,
                                last_position=-1 if position is None else position,
                                failures=0,
                                locked_until=0.0,
                                updated_at=now,
                            )
                        )
                    return Outcome.ACCEPTED
                except IntegrityError:
                    continue  # another request created the row first: compare again
        except SQLAlchemyError:
            raise StoreUnavailable() from None
        raise StoreUnavailable("OTP ledger contention; try again")

    def reject(self, seed_id: bytes, key_name: str, now: float | None = None) -> Outcome:
        """Count a failure; past the policy's limit the seed is locked for the cool-down."""
        now = time.time() if now is None else now
        table = db.otp_ledger
        limit, cool = self._policy.max_failures, self._policy.lockout_seconds
        try:
            with self._engine.begin() as conn:
                row = conn.execute(
                    select(table.c.failures, table.c.locked_until).where(table.c.seed_id == seed_id)
                ).first()
                if row is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(
                                insert(table).values(
                                    seed_id=seed_id,
                                    key_name=key_name,
                                    last_position=-1,
                                    failures=1,
                                    locked_until=now + cool if limit <= 1 else 0.0,
                                    updated_at=now,
                                )
                            )
                        return Outcome.MISMATCH
                    except IntegrityError:
                        pass
                elif row.locked_until > now:
                    return Outcome.LOCKED
                failures = (row.failures if row is not None else 0) + 1
                conn.execute(
                    update(table)
                    .where(table.c.seed_id == seed_id)
                    .values(
                        failures=table.c.failures + 1,
                        locked_until=now + cool if failures >= limit else table.c.locked_until,
                        updated_at=now,
                    )
                )
        except SQLAlchemyError:
            raise StoreUnavailable() from None
        return Outcome.MISMATCH

    def is_locked(self, seed_id: bytes, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        state = self.state(seed_id)
        return state is not None and state.locked_until > now
