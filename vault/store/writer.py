"""One writer at a time on a SQLite file, without SQLite's busy handler in the way.

SQLite lets one connection write at a time and makes the others wait in its busy handler,
which sleeps in steps of milliseconds; under a steady stream of small transactions from
several worker processes (the audit chain writes one per batch of requests) those sleeps
become most of the latency. Writers that take this lock first — a thread lock within the
process, ``flock`` on a file beside the database between processes — wait for each other in
the kernel instead and find SQLite's own lock free.

:meth:`try_run` is for the event loop: it writes at once if nothing is in the way (the lock
free, SQLite's lock free: its connection has no busy timeout), and otherwise says so without
waiting, and the caller hands the work to a thread that :meth:`run` s it.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from vault.errors import StoreUnavailable
from vault.store import Database, committed

T = TypeVar("T")
_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED


class Busy(Exception):
    """Writing now would mean waiting."""


class SqliteWriter:
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
