"""Persistence: the tables, their migrations, and the ledgers the domain keeps in them.

The database holds key metadata, ledgers and the audit trail, never key material. Every call
is bounded in time and every database failure becomes ``StoreUnavailable`` here, so callers
answer 503 and the next call simply tries again: nothing is opened at start, a worker starts
while the database is away and serves as soon as it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from vault.errors import StoreUnavailable

T = TypeVar("T")

DEFAULT_TIMEOUT = 5.0  # seconds a request may wait for the database


def _sqlite_pragmas(timeout: float) -> Callable[[Any, Any], None]:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the one writer; several worker processes share the file.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return apply


def make_engine(url: str, timeout: float = DEFAULT_TIMEOUT) -> Engine:
    """An engine that connects lazily, with the time limit applied at every level: the pool,
    the connection, and each statement (PostgreSQL) or lock wait (SQLite)."""
    if url.startswith("sqlite"):
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        pool = {} if in_memory else {"pool_size": 8, "max_overflow": 8, "pool_timeout": timeout}
        engine = create_engine(url, **pool)
        event.listen(engine, "connect", _sqlite_pragmas(timeout))
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(
        url,
        pool_size=8,
        max_overflow=8,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args={
            "connect_timeout": max(1, int(timeout)),
            "options": f"-c statement_timeout={int(timeout * 1000)}",
        },
    )


def migrate(engine: Engine) -> None:
    """Bring the schema up to date (Alembic migrations under vault/store/migrations)."""
    from vault.store.migrations import upgrade  # noqa: PLC0415 - alembic is only needed here

    upgrade(engine)


class Database:
    """The engine, with every call bounded in time and translated in one place."""

    def __init__(self, engine: Engine, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.engine = engine
        self.timeout = timeout

    @classmethod
    def open(cls, url: str, timeout: float = DEFAULT_TIMEOUT) -> Database:
        return cls(make_engine(url, timeout), timeout)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def run_sync(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SQLAlchemyError:
            raise StoreUnavailable() from None

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn`` on a worker thread, so the event loop never waits for the database."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.run_sync, fn), self.timeout)
        except TimeoutError:
            raise StoreUnavailable("database did not answer in time") from None

    def ping(self) -> None:
        def query() -> None:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        self.run_sync(query)

    def dispose(self) -> None:
        self.engine.dispose()

    def raw_transaction(self, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` in one transaction on a pooled DB-API connection; any database
        failure is ``StoreUnavailable``. For the few hot statements that are ``Prepared``
        once (SQLAlchemy's per-call machinery costs more than they do)."""
        dbapi = self.engine.dialect.dbapi
        assert dbapi is not None
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError:
            raise StoreUnavailable() from None
        try:
            return committed(raw, body)
        except dbapi.Error:
            raise StoreUnavailable() from None
        finally:
            raw.close()

    def upsert(self, table: Table) -> Any:
        """An INSERT that can take ``ON CONFLICT ... DO UPDATE`` (PostgreSQL and SQLite
        spell it alike; SQLAlchemy has one construct per dialect)."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)


def committed(raw: Any, body: Callable[[Any], T]) -> T:
    """``body(cursor)`` on the DB-API connection ``raw``, then commit; on any failure roll
    back and let the failure through as it is."""
    try:
        cursor = raw.cursor()
        try:
            result = body(cursor)
        finally:
            cursor.close()
        raw.commit()
        return result
    except BaseException:
        raw.rollback()
        raise


class Prepared:
    """A statement compiled once for one engine and run on the bare DB-API connection.

    For the few statements on a hot path (the OTP replay ledger): SQLAlchemy's per-call
    execution machinery costs several times what SQLite spends running the statement.
    """

    def __init__(self, statement: Any, engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self._defaults: dict[str, Any] = dict(compiled.params)  # literals bound by the compiler
        self._order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        )

    def params(self, values: dict[str, Any]) -> Any:
        merged = {**self._defaults, **values}
        if self._order is None:
            return merged
        return [merged[name] for name in self._order]
