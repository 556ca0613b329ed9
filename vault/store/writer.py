"""One writer at a time on a SQLite file, without SQLite's busy handler in the way.

SQLite lets one connection write at a time and makes the others wait in its busy handler,
which sleeps in steps of milliseconds; under a steady stream of small transactions from
several worker processes (the audit chain writes one per batch of requests) those sleeps
become most of the latency. Writers that take this lock first — a thread lock within the
process, ``flock`` on a file beside the database between processes — wait for each other in
the kernel instead and find SQLite's own lock free.

:meth:`run_async` is for the event loop: it writes at once if nothing is in the way (the
lock free, SQLite's lock free: its connection has no busy timeout), tries again on the loop
(other tasks run between tries) for up to ``INLINE_WAIT``, and only then hands the work to a
thread that waits its turn.

One writer per database in a process (:meth:`SqliteWriter.of`): the audit chain and the OTP
ledger take turns on the same locks. :class:`GroupCommit` lets many writes from the event
loop share one transaction, as the audit chain's records do: a request's write waits for the
one commit that carries it, and under load a commit carries many.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from vault.errors import StoreUnavailable
from vault.store import Database, committed

T = TypeVar("T")
log = logging.getLogger("vault.store")
# Seconds a write from the event loop keeps trying there while another process writes (it
# holds the lock a fraction of a millisecond) before it waits on a thread.
INLINE_WAIT = 0.005
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class Busy(Exception):
    """Writing now would mean waiting."""


class SqliteWriter:
    @classmethod
    def of(cls, db: Database) -> SqliteWriter:
        """The process's writer for ``db``: whoever writes to one file takes the same locks."""
        writer = _WRITERS.get(db)
        if writer is None:
            writer = _WRITERS[db] = cls(db)
        return writer

    def __init__(self, db: Database) -> None:
        self.db = db
        path = db.engine.url.database
        self._path = f"{path}-writer.lock" if path and path != ":memory:" else None
        self._thread = threading.Lock()
        self._fd: int | None = None
        self._own: Any = None  # for try_run: a connection that never waits for SQLite's lock

    def run(self, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` in one transaction, waiting for the other writers."""
        with self._thread, self._file_lock(blocking=True):
            return self.db.raw_transaction(body)

    def try_run(self, body: Callable[[Any], T]) -> T:
        """The same, now or not at all (``Busy``): nothing here waits."""
        if not self._thread.acquire(blocking=False):
            raise Busy()
        try:
            with self._file_lock(blocking=False):
                return self._now(body)
        finally:
            self._thread.release()

    async def run_async(
        self, body: Callable[[], Callable[[Any], T]], inline_wait: float = INLINE_WAIT
    ) -> T:
        """:meth:`run` for the event loop: on the loop whenever nothing is in the way,
        retried there for up to ``inline_wait`` seconds, then on a thread. ``body()`` gives
        the transaction's body, asked anew for each try (so that a batch can take in what
        was queued while it waited)."""
        give_up = time.monotonic() + inline_wait
        while True:
            try:
                return self.try_run(body())
            except Busy:
                if time.monotonic() > give_up:
                    return await self.db.run(functools.partial(self.run, body()))
                await asyncio.sleep(0)

    def _now(self, body: Callable[[Any], T]) -> T:
        dbapi = self.db.engine.dialect.dbapi
        assert dbapi is not None
        if self._own is None:
            try:
                self._own = self.db.engine.raw_connection()
            except SQLAlchemyError:
                raise StoreUnavailable() from None
            self._own.cursor().execute("PRAGMA busy_timeout = 0")
        try:
            return committed(self._own, body)
        except dbapi.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) in _BUSY:
                raise Busy() from None
            self._drop()
            raise StoreUnavailable() from None
        except dbapi.Error:
            raise StoreUnavailable() from None

    def _drop(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            own.invalidate()

    @contextmanager
    def _file_lock(self, *, blocking: bool) -> Any:
        if self._path is None:
            yield
            return
        if self._fd is None:
            try:  # beside the database: away with it (a missing directory, a full disk)
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                raise StoreUnavailable() from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Busy() from None
        except OSError:
            raise StoreUnavailable() from None
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


_WRITERS: weakref.WeakKeyDictionary[Database, SqliteWriter] = weakref.WeakKeyDictionary()


class GroupCommit:
    """Writes from the event loop, committed together.

    :meth:`write` queues ``body(cursor)`` and waits; one flush at a time takes everything
    queued and runs it in one transaction (:meth:`SqliteWriter.run_async`: on the loop
    whenever nobody else is writing, on a thread only after ``inline_wait``). A body runs
    its statements and returns what its caller is told; if the transaction fails, every
    write in it fails (``StoreUnavailable``) and none of it is kept.
    """

    def __init__(
        self, writer: SqliteWriter, *, inline_wait: float = INLINE_WAIT, max_batch: int = 512
    ) -> None:
        self._writer = writer
        self._inline_wait = inline_wait
        self._max_batch = max_batch
        self._queued: list[tuple[Callable[[Any], Any], asyncio.Future[Any]]] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, body: Callable[[Any], T]) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._queued.append((body, done))
        if not self._flushing:
            # Set here and cleared by the flusher in the same step as its last look at the
            # queue: a write queued after that look starts a new flush.
            self._flushing = True
            flusher = loop.create_task(self._flush())
            self._tasks.add(flusher)
            flusher.add_done_callback(self._tasks.discard)
        return await done

    async def _flush(self) -> None:
        try:
            while self._queued:
                batch = self._queued[: self._max_batch]
                del self._queued[: len(batch)]
                try:
                    results = await self._commit([body for body, _ in batch])
                except StoreUnavailable as exc:
                    failure = exc
                except Exception as exc:  # a bug in a body: fail closed
                    log.error("a group commit failed", exc_info=exc)
                    failure = StoreUnavailable()
                else:
                    for (_, done), result in zip(batch, results, strict=True):
                        if not done.done():
                            done.set_result(result)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
        finally:
            self._flushing = False

    async def _commit(self, bodies: list[Callable[[Any], Any]]) -> list[Any]:
        def run(cursor: Any) -> list[Any]:
            return [body(cursor) for body in bodies]

        return await self._writer.run_async(lambda: run, self._inline_wait)
