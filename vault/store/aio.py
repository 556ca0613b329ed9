"""PostgreSQL connections on the event loop itself, for the hot statements: the audit chain's
appends and the OTP replay ledger's reads and acceptances.

Autocommit: each call is one statement, its own transaction, committed *asynchronously*
(``synchronous_commit = off``: the server answers before its WAL reaches the disk), then made
durable by a barrier: a tiny transaction committed synchronously, whose WAL flush covers all
WAL written before it (WAL is one sequence). So a statement holding a lock (the audit chain's
head) releases it without waiting for the disk, concurrent barriers share one flush, and the
caller still learns of success only once its writes are on disk. A crash can only lose a
suffix of the WAL, so whatever survives is a prefix of the chain.

A database call on a worker thread hands the GIL back and forth with the event loop at every
round trip; with a busy loop each hand-over can wait for the interpreter's switch interval
(5 ms), which made an audit commit of four round trips cost ~8 ms where the database needed
~1 ms. Awaiting psycopg's asyncio connection on the loop costs no hand-over at all.

Connections are opened on first use (one per call in progress, at most ``size``: further
calls wait their turn), dropped on any failure (the next call opens a new one), and every
call, its wait for a connection included, is bounded in time like every database call; a
failure is ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from vault.errors import StoreUnavailable
from vault.store import Database

# A transaction with a transaction id commits with a WAL record, synchronously here (the
# function says so for its own transaction, migration 0006): once it returns, the WAL up to it
# (every earlier commit of this connection) is flushed.
_DURABLE = "SELECT audit_durable()"


class LoopConnections:
    """Up to ``size`` connections, one per call in progress.

    ``barrier=False``: each statement commits synchronously, durable when it returns, in one
    round trip instead of two; for statements whose locks nobody else is waiting for (the
    OTP ledger's rows, one per seed), where releasing them before the disk flush gains
    nothing."""

    def __init__(self, db: Database, size: int = 2, *, barrier: bool = True) -> None:
        self.db = db
        self.size = size
        self._barrier = barrier
        url = db.engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turns: asyncio.Semaphore | None = None

    async def call(self, sql: str, params: Any, *, durable: bool = True) -> Any:
        """Run one statement (its own transaction); its first row (``None`` if it has none).
        ``durable``: return only once its writes are on disk (``False`` for a read: no
        barrier)."""
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            async with asyncio.timeout(self.db.timeout), self._turn():
                conn = await self._connection()
                # Each its own transaction: the call commits without waiting for the disk,
                # the barrier does. (Not in libpq's pipeline mode: psycopg waits for it by
                # polling a socket that is always writable, which spins the event loop.)
                cursor = await conn.execute(sql, params)
                row = await cursor.fetchone() if cursor.description is not None else None
                if durable and self._barrier:
                    await conn.execute(_DURABLE)
        except (psycopg.Error, OSError, TimeoutError):
            _finish(conn)
            raise StoreUnavailable() from None
        except BaseException:
            _finish(conn)
            raise
        self._idle.append(conn)  # before any waiter for a turn runs: it takes this one
        return row

    def _turn(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections belong to the loop that made them
            self.close()
            self._loop = loop
            self._turns = asyncio.Semaphore(self.size)
        assert self._turns is not None
        return self._turns

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        timeout = max(1, int(self.db.timeout))
        options = f"-c statement_timeout={timeout * 1000}"
        if self._barrier:
            options += " -c synchronous_commit=off"
        return await psycopg.AsyncConnection.connect(
            self._conninfo, connect_timeout=timeout, options=options, autocommit=True
        )

    def close(self) -> None:
        while self._idle:
            _finish(self._idle.pop())


def _finish(conn: psycopg.AsyncConnection[Any] | None) -> None:
    """Close without awaiting (psycopg's close only finishes the libpq connection)."""
    if conn is not None:
        conn.pgconn.finish()
