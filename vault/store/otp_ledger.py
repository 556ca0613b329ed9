"""The replay ledger: per seed, the last accepted position, the consecutive failures, and
whether the seed was deactivated for good.

Acceptance is one conditional ``UPDATE ... WHERE last_position < :position``: of any number
of racing requests, on any number of replicas sharing the database, exactly one moves the
position, and only that one is told ``valid``. Every statement that lets a code through also
requires ``deactivated_at IS NULL``, so a deactivation committed on one replica holds on all.

The statements are built once: building a SQLAlchemy statement per call costs far more
than running it.

On SQLite the worker processes share one file with one writer at a time. A verification's
write (its acceptance, or its failure) goes into a group commit (``vault.store.writer``):
the writes that the event loop's requests queue meanwhile share one transaction and one
turn at the writers' file lock (the audit chain takes it too), never waiting on the loop for
more than a few milliseconds. The other calls, rare, run inline: SQLite's own busy handler
would sleep at least a millisecond when another process holds the lock, and then in steps
of up to 100 ms, with the event loop stopped; a write that finds the lock taken instead
tries again every ~100 µs (most transactions hold it for less) and only then waits in the
busy handler. Each try is a whole transaction, rolled back when refused.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import bindparam, case, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from vault.errors import BadRequest, StoreUnavailable
from vault.store import Database, Prepared, committed
from vault.store.aio import LoopConnections
from vault.store.tables import otp_ledger
from vault.store.writer import GroupCommit, SqliteWriter

log = logging.getLogger("vault.otp")
_T = otp_ledger
R = TypeVar("R")
# accept(seen=...): the caller has not read the seed's row.
UNREAD: Any = object()
# SQLite: how often, and how far apart, a write refused for another process's lock is tried
# again before it waits in SQLite's busy handler (whose first sleep is a whole millisecond).
_SPINS = 20
_SPIN_SECONDS = 100e-6
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class _Refused(Exception):
    """SQLite refused the transaction: another connection holds the lock."""


# PostgreSQL connections per process for verifications on the event loop: at most this many
# wait on the database at once, the others queue for a turn.
LOOP_CONNECTIONS = 4

# ``last_position`` is a signed 64-bit BIGINT: the positions the ledger can record.
MAX_POSITION = 2**63 - 1


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REPLAYED = "replayed"
    LOCKED = "locked"
    MISMATCH = "mismatch"
    DEACTIVATED = "deactivated"


@dataclass(frozen=True, slots=True)
class LedgerState:
    last_position: int
    failures: int
    locked_until: float
    deactivated_at: float | None = None

    def locked(self, now: float) -> bool:
        return self.locked_until > now


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    max_failures: int = 5
    lockout_seconds: int = 300


_ACTIVE = _T.c.deactivated_at.is_(None)
_ADVANCE = (
    update(_T)
    .where(
        _T.c.seed_id == bindparam("b_seed"),
        _T.c.last_position < bindparam("b_position"),
        _T.c.locked_until <= bindparam("b_now"),
        _ACTIVE,
    )
    .values(last_position=bindparam("b_position"), failures=0, updated_at=bindparam("b_now"))
)
# OCRA without counter or time: nothing tells a fresh response from a replayed one, so an
# acceptance checks the lock and never resets the failure count (else guesses alternating
# with one known-good response would never lock the seed).
_ADMIT = (
    update(_T)
    .where(_T.c.seed_id == bindparam("b_seed"), _T.c.locked_until <= bindparam("b_now"), _ACTIVE)
    .values(updated_at=bindparam("b_now"))
)
_FAIL = (
    update(_T)
    .where(_T.c.seed_id == bindparam("b_seed"), _T.c.locked_until <= bindparam("b_now"), _ACTIVE)
    .values(
        failures=_T.c.failures + 1,
        locked_until=case(
            (_T.c.failures + 1 >= bindparam("b_limit"), bindparam("b_until")),
            else_=_T.c.locked_until,
        ),
        updated_at=bindparam("b_now"),
    )
)
_UNLOCK = (
    update(_T)
    .where(_T.c.seed_id == bindparam("b_seed"), _ACTIVE)
    .values(failures=0, locked_until=0.0, updated_at=bindparam("b_now"))
)
_DEACTIVATE = (
    update(_T)
    .where(_T.c.seed_id == bindparam("b_seed"), _ACTIVE)
    .values(deactivated_at=bindparam("b_now"), updated_at=bindparam("b_now"))
)
# PostgreSQL, from the event loop: ``_ADVANCE`` and the first code's insert in one statement
# (a row comes back only if the position moved or the row was made).
_NEW_ROW = postgresql.insert(_T).values(
    seed_id=bindparam("b_seed"),
    key_name=bindparam("b_key"),
    last_position=bindparam("b_position"),
    failures=0,
    locked_until=0.0,
    updated_at=bindparam("b_now"),
)
_ADVANCED_PG = _NEW_ROW.on_conflict_do_update(
    index_elements=[_T.c.seed_id],
    set_={
        "last_position": _NEW_ROW.excluded.last_position,
        "failures": 0,
        "updated_at": _NEW_ROW.excluded.updated_at,
    },
    where=(_T.c.last_position < _NEW_ROW.excluded.last_position)
    & (_T.c.locked_until <= _NEW_ROW.excluded.updated_at)
    & _ACTIVE,
).returning(_T.c.seed_id)
_STATE = select(_T.c.last_position, _T.c.failures, _T.c.locked_until, _T.c.deactivated_at).where(
    _T.c.seed_id == bindparam("b_seed")
)
_CREATE = insert(_T).values(
    seed_id=bindparam("b_seed"),
    key_name=bindparam("b_key"),
    last_position=bindparam("b_position"),
    failures=bindparam("b_failures"),
    locked_until=bindparam("b_until"),
    updated_at=bindparam("b_now"),
    deactivated_at=bindparam("b_deactivated"),
)


def _blocked(state: LedgerState, now: float) -> Outcome | None:
    """Why a seed takes no code at all now, if it does not."""
    if state.deactivated_at is not None:
        return Outcome.DEACTIVATED
    if state.locked(now):
        return Outcome.LOCKED
    return None


def _judged(seen: LedgerState | None, position: int | None, now: float) -> Outcome | None:
    """What a state read moments ago already decides of an acceptance: a locked or
    deactivated seed takes nothing (answered without a write lock, so a flood of them cannot
    slow the verifications that move a position); a position not ahead is a replay (positions
    only grow: it stays one), a failed attempt to count. ``None``: only the conditional
    ``UPDATE`` can tell."""
    if seen is None:
        return None
    blocked = _blocked(seen, now)
    if blocked is not None:
        return blocked
    if position is not None and seen.last_position >= position:
        return Outcome.REPLAYED
    return None


class ReplayLedger:
    def __init__(
        self,
        engine: Engine,
        policy: LockoutPolicy,
        *,
        on_loop: LoopConnections | None = None,
        batches: GroupCommit | None = None,
    ) -> None:
        """``on_loop``: PostgreSQL connections the event loop awaits, for the reads and
        acceptances of verifications (each a thread hop and several round trips otherwise).
        ``batches``: SQLite's group commit, for the writes of verifications from the event
        loop (one transaction, and one turn at the file's lock, for many)."""
        self._engine = engine
        self._on_loop = on_loop
        self._batches = batches
        self._policy = policy
        dbapi = engine.dialect.dbapi
        assert dbapi is not None
        self._dbapi = dbapi
        self._advance = Prepared(_ADVANCE, engine)
        self._admit = Prepared(_ADMIT, engine)
        self._fail = Prepared(_FAIL, engine)
        self._unlock = Prepared(_UNLOCK, engine)
        self._deactivate = Prepared(_DEACTIVATE, engine)
        self._state = Prepared(_STATE, engine)
        self._create = Prepared(_CREATE, engine)
        if on_loop is not None:  # PostgreSQL
            self._advanced = Prepared(_ADVANCED_PG, engine)
            self._admitted = Prepared(_ADMIT.returning(_T.c.seed_id), engine)
        # SQLite has one writer at a time: threads of one process queue here rather than
        # in SQLite's busy handler, which sleeps in steps of milliseconds.
        self.local = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if self.local else None
        self._own: Any = None

    @classmethod
    def of(cls, db: Database, policy: LockoutPolicy) -> ReplayLedger:
        """The ledger of a serving process: on PostgreSQL, verifications read and accept
        from the event loop (``LOOP_CONNECTIONS`` connections of its own); on SQLite their
        writes are committed in groups, taking turns with the audit chain's."""
        if db.dialect == "postgresql":
            return cls(
                db.engine, policy, on_loop=LoopConnections(db, LOOP_CONNECTIONS, barrier=False)
            )
        return cls(db.engine, policy, batches=GroupCommit(SqliteWriter.of(db)))

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` (one of this ledger's methods) from the event loop: inline on SQLite
        (a local write costs less than a thread hop, which under load costs ~300 µs of GIL
        hand-overs), on a worker thread for a database across the network."""
        if self.local:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def state(self, seed_id: bytes) -> LedgerState | None:
        row = self._run(lambda cur: self._row(cur, seed_id), write=False)
        return None if row is None else LedgerState(*row)

    def _row(self, cur: Any, seed_id: bytes) -> Any:
        cur.execute(self._state.sql, self._state.params({"b_seed": seed_id}))
        return cur.fetchone()

    def _insert(self, cur: Any, seed_id: bytes, key_name: str, now: float, **row: Any) -> None:
        values = {
            "b_seed": seed_id,
            "b_key": key_name,
            "b_now": now,
            "b_position": row.get("position", -1),
            "b_failures": row.get("failures", 0),
            "b_until": row.get("locked_until", 0.0),
            "b_deactivated": row.get("deactivated_at"),
        }
        cur.execute(self._create.sql, self._create.params(values))

    def _count_failure(self, cur: Any, seed_id: bytes, now: float) -> int:
        values = {
            "b_seed": seed_id,
            "b_now": now,
            "b_limit": self._policy.max_failures,
            "b_until": now + self._policy.lockout_seconds,
        }
        cur.execute(self._fail.sql, self._fail.params(values))
        return int(cur.rowcount)

    def _failing(self, seed_id: bytes, now: float) -> Callable[[Any], int]:
        """The write that counts a failed attempt (how many rows it changed)."""
        return lambda cur: self._count_failure(cur, seed_id, now)

    def accept(
        self,
        seed_id: bytes,
        key_name: str,
        position: int | None,
        now: float | None = None,
        seen: LedgerState | None = UNREAD,
    ) -> Outcome:
        """Move the seed's position to ``position`` if it is ahead and the seed neither locked
        nor deactivated. A replay (a position not ahead) counts as a failure.

        ``position=None`` is for OCRA suites with neither counter nor time: nothing orders
        their responses (the challenge's uniqueness is the caller's), so only the lock and
        deactivation apply, and the failure count is left as it is.

        ``seen``: the seed's state as the caller read it moments ago (:meth:`state`, to plan
        the check), which spares the read below. Only the conditional ``UPDATE`` decides an
        acceptance, so a state that changed since is found out there as before.
        """
        now, values = self._acceptance(seed_id, position, now)
        if seen is UNREAD:
            seen = self.state(seed_id)
        judged = _judged(seen, position, now)
        if judged is Outcome.REPLAYED:
            self._run(self._failing(seed_id, now), write=True)
        if judged is not None:
            return judged
        return self._run(self._advancing(seed_id, key_name, position, now, values), write=True)  # type: ignore[no-any-return]

    def _advancing(
        self,
        seed_id: bytes,
        key_name: str,
        position: int | None,
        now: float,
        values: dict[str, Any],
    ) -> Callable[[Any], Outcome]:
        """The acceptance's write: the conditional ``UPDATE``; if it moved nothing, the row
        tells why (none yet: this code makes it)."""
        statement = self._admit if position is None else self._advance

        def write(cur: Any) -> Outcome:
            cur.execute(statement.sql, statement.params(values))
            if cur.rowcount == 1:
                return Outcome.ACCEPTED
            row = self._row(cur, seed_id)
            if row is None:
                self._insert(cur, seed_id, key_name, now, position=values["b_position"])
                return Outcome.ACCEPTED
            blocked = _blocked(LedgerState(*row), now)
            if blocked is not None:
                return blocked
            # Not ahead of the last accepted position: a replayed code is a failed attempt.
            self._count_failure(cur, seed_id, now)
            return Outcome.REPLAYED

        return write

    @staticmethod
    def _acceptance(
        seed_id: bytes, position: int | None, now: float | None
    ) -> tuple[float, dict[str, Any]]:
        """The time of an acceptance and its statement's values."""
        if position is not None and not 0 <= position <= MAX_POSITION:
            raise BadRequest("counter must be between 0 and 2^63-1")
        now = time.time() if now is None else now
        at = -1 if position is None else position
        return now, {"b_seed": seed_id, "b_now": now, "b_position": at}

    # -- from the event loop: PostgreSQL's hot statements on the loop's own connections ----

    async def state_async(self, seed_id: bytes) -> LedgerState | None:
        """:meth:`state` for the event loop."""
        if self._on_loop is None:
            return await self.call(self.state, seed_id)
        row = await self._on_loop.call(
            self._state.sql, self._state.params({"b_seed": seed_id}), durable=False
        )
        return None if row is None else LedgerState(*row)

    async def accept_async(
        self,
        seed_id: bytes,
        key_name: str,
        position: int | None,
        now: float | None = None,
        seen: LedgerState | None = UNREAD,
    ) -> Outcome:
        """:meth:`accept` for the event loop. On PostgreSQL an acceptance the state read does
        not rule out is one statement awaited on the loop (durable before it returns): the
        conditional ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` of ``_ADVANCED_PG``.
        Anything it does not accept takes :meth:`accept`'s whole path on a worker thread,
        whose ``UPDATE`` is as conditional: of racing requests, one is accepted. On SQLite
        the write (the same conditional ``UPDATE``) goes into the next group commit."""
        now, values = self._acceptance(seed_id, position, now)
        if seen is UNREAD:
            seen = await self.state_async(seed_id)
        judged = _judged(seen, position, now)
        if self._batches is not None:  # SQLite: committed with the loop's other ledger writes
            if judged is Outcome.REPLAYED:
                await self._batches.write(self._failing(seed_id, now))
            if judged is not None:
                return judged
            write = self._advancing(seed_id, key_name, position, now, values)
            return await self._batches.write(write)
        if self._on_loop is None:
            return await self.call(self.accept, seed_id, key_name, position, now, seen)
        if judged is None:
            row = None
            if position is not None:  # the seed's first code too: its row is made
                params = self._advanced.params({**values, "b_key": key_name})
                row = await self._on_loop.call(self._advanced.sql, params)
            elif seen is not None:
                row = await self._on_loop.call(self._admitted.sql, self._admitted.params(values))
            if row is not None:
                return Outcome.ACCEPTED
        elif judged is not Outcome.REPLAYED:
            return judged  # locked or deactivated: nothing to write
        return await self.call(self.accept, seed_id, key_name, position, now, seen)

    def close(self) -> None:
        if self._on_loop is not None:
            self._on_loop.close()

    def reject(self, seed_id: bytes, key_name: str, now: float | None = None) -> Outcome:
        """Count a failure; past the policy's limit the seed is locked for the cool-down."""
        return self._run(self._rejecting(seed_id, key_name, now), write=True)  # type: ignore[no-any-return]

    async def reject_async(
        self, seed_id: bytes, key_name: str, now: float | None = None
    ) -> Outcome:
        """:meth:`reject` for the event loop."""
        if self._batches is not None:
            return await self._batches.write(self._rejecting(seed_id, key_name, now))
        return await self.call(self.reject, seed_id, key_name, now)

    def _rejecting(
        self, seed_id: bytes, key_name: str, now: float | None
    ) -> Callable[[Any], Outcome]:
        now = time.time() if now is None else now
        limit, cool = self._policy.max_failures, self._policy.lockout_seconds

        def write(cur: Any) -> Outcome:
            if self._count_failure(cur, seed_id, now) == 1:
                return Outcome.MISMATCH
            row = self._row(cur, seed_id)
            if row is not None:
                return _blocked(LedgerState(*row), now) or Outcome.LOCKED
            until = now + cool if limit <= 1 else 0.0
            self._insert(cur, seed_id, key_name, now, failures=1, locked_until=until)
            return Outcome.MISMATCH

        return write

    def unlock(self, seed_id: bytes, now: float | None = None) -> LedgerState | None:
        """Clear the failure count and any lock (never a deactivation); the state after."""
        now = time.time() if now is None else now

        def write(cur: Any) -> Any:
            cur.execute(self._unlock.sql, self._unlock.params({"b_seed": seed_id, "b_now": now}))
            return self._row(cur, seed_id)

        row = self._run(write, write=True)
        return None if row is None else LedgerState(*row)

    def deactivate(self, seed_id: bytes, key_name: str, now: float | None = None) -> LedgerState:
        """Deactivate the seed for good (idempotent: a second call keeps the first time)."""
        now = time.time() if now is None else now

        def write(cur: Any) -> Any:
            params = self._deactivate.params({"b_seed": seed_id, "b_now": now})
            cur.execute(self._deactivate.sql, params)
            row = self._row(cur, seed_id)
            if row is None:
                self._insert(cur, seed_id, key_name, now, deactivated_at=now)
                row = self._row(cur, seed_id)
            return row

        return LedgerState(*self._run(write, write=True))

    def start(
        self, seeds: Iterable[tuple[bytes, int]], key_name: str, now: float | None = None
    ) -> None:
        """Record, for new seeds, the last position another system accepted (an imported
        token's counter), so that codes used there stay used here."""
        now = time.time() if now is None else now
        rows = [(seed_id, position) for seed_id, position in seeds]
        for _, position in rows:
            if not -1 <= position <= MAX_POSITION:
                raise BadRequest("counter must be between 0 and 2^63")
        if not rows:
            return

        def write(cur: Any) -> None:
            for seed_id, position in rows:
                self._insert(cur, seed_id, key_name, now, position=position)

        self._run(write, write=True)

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
                return committed(raw, body)
            finally:
                raw.close()
        # SQLite: one connection of the ledger's own, used under the lock (checking one out
        # of the pool per call costs more than the statements), without a busy timeout.
        with self._write_lock:
            for _ in range(_SPINS):
                try:
                    return self._on_own(body)
                except _Refused:
                    time.sleep(_SPIN_SECONDS)
            # Another process holds the lock for long: wait in SQLite's busy handler.
            raw = self._checkout()
            try:
                return committed(raw, body)
            finally:
                raw.close()

    def _on_own(self, body: Callable[[Any], Any]) -> Any:
        if self._own is None:
            self._own = self._checkout()
            cursor = self._own.cursor()
            cursor.execute("PRAGMA busy_timeout = 0")
            cursor.close()
        try:
            return committed(self._own, body)
        except self._dbapi.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _BUSY:
                raise _Refused() from None
            self._own.invalidate()
            self._own = None
            raise

    def _checkout(self) -> Any:
        try:
            return self._engine.raw_connection()
        except SQLAlchemyError:
            raise StoreUnavailable() from None
