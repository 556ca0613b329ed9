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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from vault.errors import StoreUnavailable
from vault.store import Prepared
from vault.store.tables import otp_ledger

log = logging.getLogger("vault.otp")
_T = otp_ledger


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
_CREATE = insert(_T).values(
    seed_id=bindparam("b_seed"),
    key_name=bindparam("b_key"),
    last_position=bindparam("b_position"),
    failures=bindparam("b_failures"),
    locked_until=bindparam("b_until"),
    updated_at=bindparam("b_now"),
)


class ReplayLedger:
    def __init__(self, engine: Engine, policy: LockoutPolicy) -> None:
        self._engine = engine
        self._policy = policy
        dbapi = engine.dialect.dbapi
        assert dbapi is not None
        self._dbapi = dbapi
        self._advance = Prepared(_ADVANCE, engine)
        self._succeed = Prepared(_SUCCEED, engine)
        self._fail = Prepared(_FAIL, engine)
        self._state = Prepared(_STATE, engine)
        self._create = Prepared(_CREATE, engine)
        # SQLite has one writer at a time: threads of one process queue here rather than
        # in SQLite's busy handler, which sleeps in steps of milliseconds.
        self.local = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if self.local else None
        self._own: Any = None

    def state(self, seed_id: bytes) -> LedgerState | None:
        row = self._run(lambda cur: self._row(cur, {"b_seed": seed_id}), write=False)
        return None if row is None else LedgerState(row[0], row[1], row[2])

    def _row(self, cur: Any, values: dict[str, Any]) -> Any:
        cur.execute(self._state.sql, self._state.params(values))
        return cur.fetchone()

    def accept(
        self, seed_id: bytes, key_name: str, position: int | None, now: float | None = None
    ) -> Outcome:
        """Move the seed's position to ``position`` if it is ahead and the seed not locked.

        ``position=None`` is for OCRA suites with neither counter nor time: nothing orders
        their responses (the challenge's uniqueness is the caller's), so only the lock and
        the failure count apply.
        """
        now = time.time() if now is None else now
        values: dict[str, Any] = {
            "b_seed": seed_id,
            "b_now": now,
            "b_position": -1 if position is None else position,
            "b_key": key_name,
            "b_failures": 0,
            "b_until": 0.0,
        }
        statement = self._succeed if position is None else self._advance
        # A replay or a locked seed is answered from a read: no write lock is taken, so a
        # flood of replays cannot slow down the verifications that do move a position.
        seen = self._run(lambda cur: self._row(cur, values), write=False)
        if seen is not None:
            if seen[2] > now:
                return Outcome.LOCKED
            if position is not None and seen[0] >= position:
                return Outcome.REPLAYED

        def write(cur: Any) -> Outcome:
            cur.execute(statement.sql, statement.params(values))
            if cur.rowcount == 1:
                return Outcome.ACCEPTED
            row = self._row(cur, values)
            if row is not None:
                return Outcome.LOCKED if row[2] > now else Outcome.REPLAYED
            cur.execute(self._create.sql, self._create.params(values))
            return Outcome.ACCEPTED

        return self._run(write, write=True)  # type: ignore[no-any-return]

    def reject(self, seed_id: bytes, key_name: str, now: float | None = None) -> Outcome:
        """Count a failure; past the policy's limit the seed is locked for the cool-down."""
        now = time.time() if now is None else now
        limit, cool = self._policy.max_failures, self._policy.lockout_seconds
        values: dict[str, Any] = {
            "b_seed": seed_id,
            "b_now": now,
            "b_limit": limit,
            "b_until": now + cool,
            "b_key": key_name,
            "b_position": -1,
            "b_failures": 1,
        }

        def write(cur: Any) -> Outcome:
            cur.execute(self._fail.sql, self._fail.params(values))
            if cur.rowcount == 1:
                return Outcome.MISMATCH
            if self._row(cur, values) is not None:
                return Outcome.LOCKED
            created = dict(values, b_until=now + cool if limit <= 1 else 0.0)
            cur.execute(self._create.sql, self._create.params(created))
            return Outcome.MISMATCH

        return self._run(write, write=True)  # type: ignore[no-any-return]

    def _run(self, body: Callable[[Any], Any], *, write: bool) -> Any:
        """One transaction on a pooled DB-API connection. A first-time row raced by another
        replica (a unique violation) is retried once: then the row exists."""
        for attempt in range(2):
            try:
                return self._transaction(body, write)
            except self._dbapi.IntegrityError:
                if attempt:
                    raise StoreUnavailable() from None
            except self._dbapi.Error as exc:
                log.warning("OTP ledger failed: %s", type(exc).__name__)
                raise StoreUnavailable() from None
        raise StoreUnavailable()

    def _transaction(self, body: Callable[[Any], Any], write: bool) -> Any:
        if self._write_lock is None:
            raw = self._checkout()
            try:
                return self._commit(raw, body)
            finally:
                raw.close()
        # SQLite: one connection of the ledger's own, used under the lock (checking one out
        # of the pool per call costs more than the statements).
        with self._write_lock:
            if self._own is None:
                self._own = self._checkout()
            try:
                return self._commit(self._own, body)
            except self._dbapi.OperationalError:
                self._own.invalidate()
                self._own = None
                raise

    def _checkout(self) -> Any:
        try:
            return self._engine.raw_connection()
        except SQLAlchemyError:
            raise StoreUnavailable() from None

    @staticmethod
    def _commit(raw: Any, body: Callable[[Any], Any]) -> Any:
        try:
            cur = raw.cursor()
            try:
                result = body(cur)
            finally:
                cur.close()
            raw.commit()
            return result
        except BaseException:
            raw.rollback()
            raise
