"""The replay ledger: per seed, the last accepted position and the consecutive failures.

Acceptance is one conditional ``UPDATE ... WHERE last_position < :position``: of any number
of racing requests, on any number of replicas sharing the database, exactly one moves the
position, and only that one is told ``valid``.

The statements are built once: building a SQLAlchemy statement per call costs far more
than running it.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from vault import db
from vault.errors import StoreUnavailable

log = logging.getLogger("vault.otp")
_T = db.otp_ledger


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


_ADVANCE = (
    update(_T)
    .where(
        _T.c.seed_id == bindparam("b_seed"),
        _T.c.last_position < bindparam("b_position"),
        _T.c.locked_until <= bindparam("b_now"),
    )
    .values(last_position=bindparam("b_position"), failures=0, updated_at=bindparam("b_now"))
)
# OCRA without counter or time: no order to keep, only the lock and the failure count.
_SUCCEED = (
    update(_T)
    .where(_T.c.seed_id == bindparam("b_seed"), _T.c.locked_until <= bindparam("b_now"))
    .values(failures=0, updated_at=bindparam("b_now"))
)
_FAIL = (
    update(_T)
    .where(_T.c.seed_id == bindparam("b_seed"), _T.c.locked_until <= bindparam("b_now"))
    .values(
        failures=_T.c.failures + 1,
        locked_until=case(
            (_T.c.failures + 1 >= bindparam("b_limit"), bindparam("b_until")),
            else_=_T.c.locked_until,
        ),
        updated_at=bindparam("b_now"),
    )
)
_STATE = select(_T.c.last_position, _T.c.failures, _T.c.locked_until).where(
    _T.c.seed_id == bindparam("b_seed")
)
_CREATE = insert(_T)


class ReplayLedger:
    def __init__(self, engine: Engine, policy: LockoutPolicy) -> None:
        self._engine = engine
        self._policy = policy
        # SQLite has one writer at a time: threads of one process queue here rather than
        # in SQLite's busy handler, which sleeps in steps of milliseconds.
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    def state(self, seed_id: bytes) -> LedgerState | None:
        try:
            with self._engine.connect() as conn:
                row = conn.execute(_STATE, {"b_seed": seed_id}).first()
        except SQLAlchemyError as exc:
            log.warning("OTP ledger read failed: %s", type(exc).__name__)
            raise StoreUnavailable() from None
        return None if row is None else LedgerState(row[0], row[1], row[2])

    def accept(
        self, seed_id: bytes, key_name: str, position: int | None, now: float | None = None
    ) -> Outcome:
        """Move the seed's position to ``position`` if it is ahead and the seed not locked.

        ``position=None`` is for OCRA suites with neither counter nor time: nothing orders
        their responses (the challenge's uniqueness is the caller's), so only the lock and
        the failure count apply.
        """
        now = time.time() if now is None else now
        params = {"b_seed": seed_id, "b_now": now, "b_position": position}
        statement = _SUCCEED if position is None else _ADVANCE

        def write(conn: Connection) -> Outcome:
            if conn.execute(statement, params).rowcount == 1:
                return Outcome.ACCEPTED
            row = conn.execute(_STATE, params).first()
            if row is not None:
                return Outcome.LOCKED if row[2] > now else Outcome.REPLAYED
            initial = -1 if position is None else position
            conn.execute(_CREATE, self._new_row(seed_id, key_name, initial, 0, 0.0, now))
            return Outcome.ACCEPTED

        return self._write(write)

    def reject(self, seed_id: bytes, key_name: str, now: float | None = None) -> Outcome:
        """Count a failure; past the policy's limit the seed is locked for the cool-down."""
        now = time.time() if now is None else now
        limit, cool = self._policy.max_failures, self._policy.lockout_seconds
        params = {"b_seed": seed_id, "b_now": now, "b_limit": limit, "b_until": now + cool}

        def write(conn: Connection) -> Outcome:
            if conn.execute(_FAIL, params).rowcount == 1:
                return Outcome.MISMATCH
            row = conn.execute(_STATE, params).first()
            if row is not None:
                return Outcome.LOCKED
            locked_until = now + cool if limit <= 1 else 0.0
            conn.execute(_CREATE, self._new_row(seed_id, key_name, -1, 1, locked_until, now))
            return Outcome.MISMATCH

        return self._write(write)

    @staticmethod
    def _new_row(
        seed_id: bytes, key_name: str, position: int, failures: int, locked_until: float, now: float
    ) -> dict[str, object]:
        return {
            "seed_id": seed_id,
            "key_name": key_name,
            "last_position": position,
            "failures": failures,
            "locked_until": locked_until,
            "updated_at": now,
        }

    def _write(self, body: object) -> Outcome:
        """One transaction; a first-time row raced by another replica is retried once."""
        assert callable(body)
        for attempt in range(2):
            try:
                if self._write_lock is None:
                    with self._engine.begin() as conn:
                        return body(conn)  # type: ignore[no-any-return]
                with self._write_lock, self._engine.begin() as conn:
                    return body(conn)  # type: ignore[no-any-return]
            except IntegrityError:
                if attempt:
                    raise StoreUnavailable() from None
            except SQLAlchemyError as exc:
                log.warning("OTP ledger write failed: %s", type(exc).__name__)
                raise StoreUnavailable() from None
        raise StoreUnavailable()

    def is_locked(self, seed_id: bytes, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        state = self.state(seed_id)
        return state is not None and state.locked_until > now
