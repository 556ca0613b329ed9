"""Keys and their versions in the database (the registry's rows; the objects are in the HSM)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from vault.errors import NotFound
from vault.keys import Key, KeyVersion
from vault.keytypes import KeyType, Purpose, key_type
from vault.store import Database
from vault.store.tables import key_versions, keys

T = TypeVar("T")


class KeyStore:
    """Synchronous statements over ``keys`` and ``key_versions``; the caller chooses the
    thread (``Database.run``) and gets ``StoreUnavailable`` for any database failure."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, name: str) -> Key:
        def query() -> Key:
            with self.db.engine.connect() as conn:
                row = conn.execute(select(keys).where(keys.c.name == name)).mappings().first()
                if row is None:
                    raise NotFound(f"key {name!r} not found")
                versions = conn.execute(
                    select(key_versions).where(key_versions.c.key_name == name)
                ).mappings()
                kind = key_type(row["type"])
                return Key(
                    name=row["name"],
                    type=kind,
                    purpose=kind.purpose(row["purpose"]),
                    latest_version=row["latest_version"],
                    min_decryption_version=row["min_decryption_version"],
                    min_encryption_version=row["min_encryption_version"],
                    deletion_allowed=bool(row["deletion_allowed"]),
                    auto_rotate_period=row["auto_rotate_period"],
                    created_at=row["created_at"],
                    updated_at=row["updated_at"],
                    versions={v["version"]: _version(v) for v in versions},
                    min_available_version=row["min_available_version"],
                )

        return self.db.run_sync(query)

    def names(self) -> list[str]:
        def query() -> list[str]:
            with self.db.engine.connect() as conn:
                return [r[0] for r in conn.execute(select(keys.c.name).order_by(keys.c.name))]

        return self.db.run_sync(query)

    def insert(
        self,
        name: str,
        kind: KeyType,
        purpose: Purpose,
        auto_rotate_period: int,
        first: KeyVersion,
    ) -> bool:
        """Add a key with its first version; ``False`` if the name is taken (another replica
        created it first)."""
        now = time.time()

        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(keys).values(
                        name=name,
                        type=kind.name,
                        latest_version=first.version,
                        min_decryption_version=1,
                        min_encryption_version=0,
                        deletion_allowed=False,
                        auto_rotate_period=auto_rotate_period,
                        created_at=now,
                        updated_at=now,
                        purpose=purpose.value,
                    )
                )
                conn.execute(insert(key_versions).values(**_version_row(name, first)))

        try:
            self.db.run_sync(lambda: _integrity(write))
        except _Taken:
            return False
        return True

    def add_version(
        self, name: str, after: int, version: KeyVersion, purpose: Purpose | None = None
    ) -> bool:
        """Make ``version`` the latest if the latest is still ``after`` (and the key's purpose
        ``purpose``, when given); ``False`` if another rotation won the race (then nothing was
        written)."""
        changes: dict[str, Any] = {"latest_version": version.version, "updated_at": time.time()}
        if purpose is not None:
            changes["purpose"] = purpose.value

        def write() -> bool:
            with self.db.engine.begin() as conn:
                moved = conn.execute(
                    update(keys)
                    .where(keys.c.name == name, keys.c.latest_version == after)
                    .values(**changes)
                ).rowcount
                if moved != 1:
                    return False
                conn.execute(insert(key_versions).values(**_version_row(name, version)))
                return True

        try:
            return self.db.run_sync(lambda: _integrity(write))
        except _Taken:
            return False

    def update(self, name: str, changes: dict[str, Any]) -> None:
        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(keys)
                    .where(keys.c.name == name)
                    .values(**changes, updated_at=time.time())
                )

        self.db.run_sync(write)

    def trim(self, name: str, floor: int) -> list[KeyVersion]:
        """Raise ``min_available_version`` to ``floor`` and remove the rows of the versions
        below it, in one transaction; the removed versions (their objects are the caller's
        to destroy)."""

        def write() -> list[KeyVersion]:
            with self.db.engine.begin() as conn:
                below = key_versions.c.version < floor
                mine = key_versions.c.key_name == name
                gone = [
                    _version(v)
                    for v in conn.execute(select(key_versions).where(mine, below)).mappings()
                ]
                conn.execute(
                    update(keys)
                    .where(keys.c.name == name, keys.c.min_available_version <= floor)
                    .values(min_available_version=floor, updated_at=time.time())
                )
                conn.execute(delete(key_versions).where(mine, below))
                return gone

        return self.db.run_sync(write)

    def remove_version(self, name: str, version: int) -> None:
        """Forget one version (reconcile: its HSM object is gone for good)."""

        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(
                    delete(key_versions).where(
                        key_versions.c.key_name == name, key_versions.c.version == version
                    )
                )

        self.db.run_sync(write)

    def all_keys(self) -> list[Key]:
        """Every key with its versions (the officers' inventory and reconcile)."""
        return [self.load(name) for name in self.names()]

    def rotation_due(self, now: float) -> list[tuple[str, int]]:
        """Keys with an ``auto_rotate_period`` whose latest version is at least that old:
        (name, latest version)."""

        def query() -> list[tuple[str, int]]:
            latest = key_versions.c.version == keys.c.latest_version
            with self.db.engine.connect() as conn:
                rows = conn.execute(
                    select(keys.c.name, keys.c.latest_version)
                    .select_from(
                        keys.join(key_versions, (key_versions.c.key_name == keys.c.name) & latest)
                    )
                    .where(
                        keys.c.auto_rotate_period > 0,
                        key_versions.c.created_at + keys.c.auto_rotate_period <= now,
                    )
                    .order_by(keys.c.name)
                )
                return [(r[0], r[1]) for r in rows]

        return self.db.run_sync(query)

    def delete(self, name: str) -> None:
        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(delete(key_versions).where(key_versions.c.key_name == name))
                conn.execute(delete(keys).where(keys.c.name == name))

        self.db.run_sync(write)

    def add_wraps(self, counts: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Add to versions' wrap counts in one transaction; the totals after it, for the
        versions that still exist."""
        add = (
            update(key_versions)
            .where(
                key_versions.c.key_name == bindparam("name"),
                key_versions.c.version == bindparam("number"),
            )
            .values(wraps=key_versions.c.wraps + bindparam("count"))
            .returning(key_versions.c.wraps)
        )

        def write() -> dict[tuple[str, int], int]:
            totals = {}
            with self.db.engine.begin() as conn:
                for (name, number), count in sorted(counts.items()):
                    total = conn.execute(
                        add, {"name": name, "number": number, "count": count}
                    ).scalar()
                    if total is not None:
                        totals[(name, number)] = int(total)
            return totals

        return self.db.run_sync(write)


def _version_row(name: str, version: KeyVersion) -> dict[str, Any]:
    return {
        "key_name": name,
        "version": version.version,
        "hsm_id": version.hsm_id,
        "created_at": version.created_at,
        "hmac_key": version.has_hmac_key,
        "wraps": version.wraps,
    }


class _Taken(Exception):
    pass


def _integrity(fn: Callable[[], T]) -> T:
    """A unique-key violation means someone else got there first: not a database fault."""
    try:
        return fn()
    except IntegrityError:
        raise _Taken() from None


def _version(row: Any) -> KeyVersion:
    return KeyVersion(
        row["version"],
        bytes(row["hsm_id"]),
        row["created_at"],
        has_hmac_key=bool(row["hmac_key"]),
        wraps=row["wraps"],
    )
