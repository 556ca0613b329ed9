"""The registry's tables. The database holds metadata and ledgers, never key material."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

keys = Table(
    "keys",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("latest_version", Integer, nullable=False),
    Column("min_decryption_version", Integer, nullable=False, default=1),
    Column("min_encryption_version", Integer, nullable=False, default=0),
    Column("deletion_allowed", Boolean, nullable=False, default=False),
    Column("auto_rotate_period", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

key_versions = Table(
    "key_versions",
    metadata,
    Column("key_name", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    # CKA_ID of the version's HSM object(s); a role suffix names each object of a version.
    Column("hsm_id", LargeBinary(32), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(["key_name"], ["keys.name"], ondelete="CASCADE"),
)

# NIST SP 800-38D §8.2.1: each process encrypting under a key gets a fixed field of its own.
nonce_prefixes = Table(
    "nonce_prefixes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("owner", String(128), nullable=False),
)

# One row per provisioned OTP seed: the last accepted position and the failure count.
otp_ledger = Table(
    "otp_ledger",
    metadata,
    Column("seed_id", LargeBinary(32), primary_key=True),
    Column("key_name", String(128), nullable=False),
    Column("last_position", BigInteger, nullable=False, default=-1),
    Column("failures", Integer, nullable=False, default=0),
    Column("locked_until", Float, nullable=False, default=0.0),
    Column("updated_at", Float, nullable=False),
)

# Message ids of opened partner messages, kept until they could no longer pass the clock check.
seen_messages = Table(
    "seen_messages",
    metadata,
    Column("partner", String(128), primary_key=True),
    Column("message_id", String(128), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; several worker processes share the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, pool_size=8, max_overflow=8)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema up to date (Alembic migrations under vault/migrations)."""
    from vault.migrations import upgrade  # noqa: PLC0415 - alembic is only needed here

    upgrade(engine)


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
