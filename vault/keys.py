"""Named keys with versions (Tink's keyset model): one primary that encrypts, many that decrypt.

Each version is its own HSM object, created before its row is committed: a crash in
between leaves an orphan object (harmless, found by reconcile), never a row without a key.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from vault import db
from vault.errors import BadRequest, InvalidCiphertext, NotFound, StoreUnavailable
from vault.hsm import Hsm, HsmOps
from vault.keytypes import KeyType, key_type, object_id, object_label

T = TypeVar("T")

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_HSM_ID_BYTES = 16


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    hsm_id: bytes
    created_at: float

    def object_id(self, role: str = "") -> bytes:
        return object_id(self.hsm_id, role)


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    type: KeyType
    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    deletion_allowed: bool
    auto_rotate_period: int
    created_at: float
    updated_at: float
    versions: dict[int, KeyVersion] = field(default_factory=dict)

    def for_encryption(self, requested: int | None = None) -> KeyVersion:
        """The version to encrypt (sign, MAC) with: the latest unless one is asked for."""
        if requested is None or requested == 0:
            version = self.latest_version
        else:
            version = requested
            if version > self.latest_version or version < max(1, self.min_encryption_version):
                raise BadRequest("requested key version is not allowed for encryption")
        if self.min_encryption_version and version < self.min_encryption_version:
            raise BadRequest("requested key version is not allowed for encryption")
        if version < self.min_decryption_version:
            # It could never be decrypted again.
            raise BadRequest("requested key version is below min_decryption_version")
        return self.versions[version]

    def for_decryption(self, version: int) -> KeyVersion:
        """The version that made a ciphertext; anything not usable is an invalid ciphertext."""
        found = self.versions.get(version)
        if found is None or version < self.min_decryption_version:
            raise InvalidCiphertext()
        return found


MIN_ROTATE_PERIOD = 3600  # as Vault: automatic rotation at most once an hour


def check_rotate_period(seconds: int) -> int:
    if isinstance(seconds, bool) or seconds < 0 or 0 < seconds < MIN_ROTATE_PERIOD:
        raise BadRequest("auto_rotate_period must be 0 (off) or at least one hour")
    return seconds


def validate_name(name: str) -> str:
    if not KEY_NAME.fullmatch(name):
        raise BadRequest("key name must be 1-128 characters of letters, digits, '.', '_' or '-'")
    return name


class KeyRegistry:
    """Keys and versions in the database, their objects in the HSM, a short cache in memory.

    The cache keeps the hot path free of database round trips; other replicas see a
    rotation or a config change within ``cache_ttl`` seconds.
    """

    def __init__(self, engine: Engine, hsm: Hsm, cache_ttl: float = 1.0) -> None:
        self.engine = engine
        self.hsm = hsm
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, Key]] = {}

    # -- reads -----------------------------------------------------------------------------

    async def get(self, name: str) -> Key:
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        key = await self._db(lambda: self._load(name))
        self._cache[name] = (time.monotonic(), key)
        return key

    def get_sync(self, name: str) -> Key:
        key = self._guard(lambda: self._load(name))
        self._cache[name] = (time.monotonic(), key)
        return key

    def _load(self, name: str) -> Key:
        with self.engine.connect() as conn:
            row = conn.execute(select(db.keys).where(db.keys.c.name == name)).mappings().first()
            if row is None:
                raise NotFound(f"key {name!r} not found")
            versions = conn.execute(
                select(db.key_versions).where(db.key_versions.c.key_name == name)
            ).mappings()
            return Key(
                name=row["name"],
                type=key_type(row["type"]),
                latest_version=row["latest_version"],
                min_decryption_version=row["min_decryption_version"],
                min_encryption_version=row["min_encryption_version"],
                deletion_allowed=bool(row["deletion_allowed"]),
                auto_rotate_period=row["auto_rotate_period"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                versions={
                    v["version"]: KeyVersion(v["version"], bytes(v["hsm_id"]), v["created_at"])
                    for v in versions
                },
            )

    async def names(self) -> list[str]:
        def query() -> list[str]:
            with self.engine.connect() as conn:
                return [r[0] for r in conn.execute(select(db.keys.c.name).order_by(db.keys.c.name))]

        return await self._db(query)

    # -- changes ---------------------------------------------------------------------------

    def create_sync(
        self, name: str, type_name: str, auto_rotate_period: int = 0
    ) -> tuple[Key, bool]:
        """Create ``name`` with version 1; an existing key is returned unchanged."""
        validate_name(name)
        kind = key_type(type_name)
        check_rotate_period(auto_rotate_period)
        try:
            return self.get_sync(name), False
        except NotFound:
            pass
        version = self._new_version(name, kind, 1)
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(db.keys).values(
                        name=name,
                        type=kind.name,
                        latest_version=1,
                        min_decryption_version=1,
                        min_encryption_version=0,
                        deletion_allowed=False,
                        auto_rotate_period=auto_rotate_period,
                        created_at=now,
                        updated_at=now,
                    )
                )
                conn.execute(
                    insert(db.key_versions).values(
                        key_name=name,
                        version=1,
                        hsm_id=version.hsm_id,
                        created_at=version.created_at,
                    )
                )
        except IntegrityError:
            # Another replica created it first: ours was never used.
            self._destroy_objects(kind, [version])
            return self.get_sync(name), False
        except SQLAlchemyError:
            self._destroy_objects(kind, [version])
            raise StoreUnavailable() from None
        return self.get_sync(name), True

    def rotate_sync(self, name: str) -> Key:
        for _ in range(5):
            key = self.get_sync(name)
            new = key.latest_version + 1
            version = self._new_version(name, key.type, new)
            try:
                with self.engine.begin() as conn:
                    moved = conn.execute(
                        update(db.keys)
                        .where(
                            db.keys.c.name == name, db.keys.c.latest_version == key.latest_version
                        )
                        .values(latest_version=new, updated_at=time.time())
                    ).rowcount
                    if moved != 1:
                        raise IntegrityError("concurrent rotation", None, Exception())
                    conn.execute(
                        insert(db.key_versions).values(
                            key_name=name,
                            version=new,
                            hsm_id=version.hsm_id,
                            created_at=version.created_at,
                        )
                    )
            except IntegrityError:
                self._destroy_objects(key.type, [version])
                continue
            except SQLAlchemyError:
                self._destroy_objects(key.type, [version])
                raise StoreUnavailable() from None
            return self.get_sync(name)
        raise StoreUnavailable("key is being rotated concurrently; try again")

    def configure_sync(
        self,
        name: str,
        *,
        min_decryption_version: int | None = None,
        min_encryption_version: int | None = None,
        deletion_allowed: bool | None = None,
        auto_rotate_period: int | None = None,
    ) -> Key:
        key = self.get_sync(name)
        changes: dict[str, Any] = {}
        if min_decryption_version is not None:
            if min_decryption_version < 1 or min_decryption_version > key.latest_version:
                raise BadRequest("min_decryption_version must be between 1 and the latest version")
            changes["min_decryption_version"] = min_decryption_version
        if min_encryption_version is not None:
            if min_encryption_version < 0 or min_encryption_version > key.latest_version:
                raise BadRequest("min_encryption_version must be between 0 and the latest version")
            changes["min_encryption_version"] = min_encryption_version
        new_min_dec = changes.get("min_decryption_version", key.min_decryption_version)
        new_min_enc = changes.get("min_encryption_version", key.min_encryption_version)
        if new_min_enc and new_min_enc < new_min_dec:
            raise BadRequest("min_encryption_version must be 0 or at least min_decryption_version")
        if deletion_allowed is not None:
            changes["deletion_allowed"] = deletion_allowed
        if auto_rotate_period is not None:
            changes["auto_rotate_period"] = check_rotate_period(auto_rotate_period)
        if changes:
            changes["updated_at"] = time.time()
            self._guard(lambda: self._update(name, changes))
        return self.get_sync(name)

    def _update(self, name: str, changes: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(db.keys).where(db.keys.c.name == name).values(**changes))

    def delete_sync(self, name: str) -> None:
        key = self.get_sync(name)
        if not key.deletion_allowed:
            raise BadRequest("deletion is not allowed for this key")

        def remove() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(db.key_versions).where(db.key_versions.c.key_name == name))
                conn.execute(delete(db.keys).where(db.keys.c.name == name))

        # Rows first: once they are gone nothing can ask for the objects.
        self._guard(remove)
        self._cache.pop(name, None)
        self._destroy_objects(key.type, list(key.versions.values()))

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)

    # -- helpers ---------------------------------------------------------------------------

    def _new_version(self, name: str, kind: KeyType, number: int) -> KeyVersion:
        hsm_id = secrets.token_bytes(_HSM_ID_BYTES)

        def job(ops: HsmOps) -> None:
            made: list[bytes] = []
            try:
                for role, spec in kind.objects:
                    ops.generate(spec, object_id(hsm_id, role), object_label(name, number, role))
                    made.append(object_id(hsm_id, role))
            except BaseException:
                for oid in made:
                    ops.destroy(oid)
                raise

        self.hsm.run_sync(job)
        return KeyVersion(number, hsm_id, time.time())

    def _destroy_objects(self, kind: KeyType, versions: list[KeyVersion]) -> None:
        def job(ops: HsmOps) -> None:
            for v in versions:
                for role, _ in kind.objects:
                    ops.destroy(v.object_id(role))

        self.hsm.run_sync(job)

    @staticmethod
    def _guard(fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SQLAlchemyError:
            raise StoreUnavailable() from None

    async def _db(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._guard, fn)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous registry change off the event loop."""
        # The changes refresh (or, for a deletion, drop) the key's cache entry themselves.
        return await asyncio.to_thread(fn, *args, **kwargs)
