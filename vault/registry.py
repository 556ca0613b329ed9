"""The key registry: versions in the database, their objects in the HSM, a short cache.

Each version's HSM object is created before its row is committed: a crash in between leaves
an orphan object (harmless, never used, found by reconcile), never a row without a key.

The cache keeps the hot path free of database round trips; other replicas see a rotation or
a configuration change (a raised ``min_decryption_version`` included) within ``cache_ttl``
seconds, and a value naming a version newer than the cached key makes the registry read the
key again at once (``get(newest=...)``), so a rotation on one replica is usable everywhere
immediately.

Deleting a key destroys every version's objects after reading the token afresh: SoftHSM 2.6
hides from a process the objects others made once it has written to the token itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hsm import HsmOps, KeySpec
from vault.errors import BadRequest, NotFound, StoreUnavailable
from vault.hsm import Hsm
from vault.keys import Key, KeyVersion, rotate_period, validate_name
from vault.keytypes import key_type, object_id, object_label
from vault.store.keys import KeyStore

T = TypeVar("T")
Objects = tuple[tuple[str, KeySpec], ...]

_HSM_ID_BYTES = 16
_ROTATE_ATTEMPTS = 5


class KeyRegistry:
    def __init__(self, store: KeyStore, hsm: Hsm, cache_ttl: float = 1.0) -> None:
        self.store = store
        self.hsm = hsm
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, Key]] = {}

    # -- reads -----------------------------------------------------------------------------

    async def get(self, name: str, *, newest: int | None = None) -> Key:
        """The key, from the cache when it is fresh and knows version ``newest`` (the
        version a ciphertext or signature names); otherwise read again."""
        hit = self._cache.get(name)
        if (
            hit is not None
            and time.monotonic() - hit[0] < self._ttl
            and (newest is None or newest <= hit[1].latest_version)
        ):
            return hit[1]
        read_at = time.monotonic()
        key = await self.store.db.run(lambda: self.store.load(name))
        return self._remember(read_at, key)

    def get_sync(self, name: str) -> Key:
        read_at = time.monotonic()
        return self._remember(read_at, self.store.load(name))

    def _remember(self, read_at: float, key: Key) -> Key:
        """Cache ``key`` as of when its read began (so no entry is ever older than the TTL
        says), unless a read that began later is already there."""
        hit = self._cache.get(key.name)
        if hit is None or hit[0] <= read_at:
            self._cache[key.name] = (read_at, key)
        return key

    async def names(self) -> list[str]:
        return await self.store.db.run(self.store.names)

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)

    # -- changes (blocking: the officers' tool calls them directly, the API on a thread) ---

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a change off the event loop (key generation can take a second)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def create_sync(
        self,
        name: str,
        type_name: str,
        auto_rotate_period: int | str = 0,
        purpose: str | None = None,
    ) -> tuple[Key, bool]:
        """Create ``name`` with version 1 for ``purpose`` (the type's default if ``None``); an
        existing key is returned unchanged."""
        validate_name(name)
        kind = key_type(type_name)
        chosen = kind.purpose(purpose)
        period = rotate_period(auto_rotate_period)
        try:
            return self.get_sync(name), False
        except NotFound:
            pass
        objects = kind.purposes[chosen]
        first = self._new_version(name, objects, 1)
        try:
            created = self.store.insert(name, kind, chosen, period, first)
        except StoreUnavailable:
            self._destroy_objects(objects, [first])
            raise
        if not created:  # another replica created it first: ours was never used
            self._destroy_objects(objects, [first])
        return self.get_sync(name), created

    def rotate_sync(
        self, name: str, *, if_latest: int | None = None, purpose: str | None = None
    ) -> Key:
        """Add a version and make it the latest. ``if_latest``: only if version ``if_latest``
        is still the latest (how replicas that all see a version's bound crossed rotate it
        once). ``purpose``: the new version, and the key from now on, serve this purpose
        (for keys made before purposes existed: README, "Upgrading")."""
        for _ in range(_ROTATE_ATTEMPTS):
            key = self.get_sync(name)
            if if_latest is not None and key.latest_version != if_latest:
                return key
            chosen = key.purpose if purpose is None else key.type.purpose(purpose)
            objects = key.type.purposes[chosen]
            version = self._new_version(name, objects, key.latest_version + 1)
            try:
                moved = self.store.add_version(
                    name, key.latest_version, version, None if chosen is key.purpose else chosen
                )
            except StoreUnavailable:
                self._destroy_objects(objects, [version])
                raise
            if moved:
                return self.get_sync(name)
            # Another rotation won the race: ours was never used.
            self._destroy_objects(objects, [version])
        raise StoreUnavailable("key is being rotated concurrently; try again")

    def configure_sync(
        self,
        name: str,
        *,
        min_decryption_version: int | None = None,
        min_encryption_version: int | None = None,
        deletion_allowed: bool | None = None,
        auto_rotate_period: int | str | None = None,
    ) -> Key:
        key = self.get_sync(name)
        changes: dict[str, Any] = {}
        if min_decryption_version is not None:
            if not 1 <= min_decryption_version <= key.latest_version:
                raise BadRequest("min_decryption_version must be between 1 and the latest version")
            changes["min_decryption_version"] = min_decryption_version
        if min_encryption_version is not None:
            if not 0 <= min_encryption_version <= key.latest_version:
                raise BadRequest("min_encryption_version must be between 0 and the latest version")
            changes["min_encryption_version"] = min_encryption_version
        new_min_dec = changes.get("min_decryption_version", key.min_decryption_version)
        new_min_enc = changes.get("min_encryption_version", key.min_encryption_version)
        if new_min_enc and new_min_enc < new_min_dec:
            raise BadRequest("min_encryption_version must be 0 or at least min_decryption_version")
        if deletion_allowed is not None:
            changes["deletion_allowed"] = deletion_allowed
        if auto_rotate_period is not None:
            changes["auto_rotate_period"] = rotate_period(auto_rotate_period)
        if changes:
            self.store.update(name, changes)
        return self.get_sync(name)

    def delete_sync(self, name: str) -> None:
        key = self.get_sync(name)
        if not key.deletion_allowed:
            raise BadRequest("deletion is not allowed for this key")
        # Rows first: once they are gone nothing can ask for the objects. Every version's
        # objects go, whatever purpose it was made for and whichever process made it.
        self.store.delete(name)
        self._cache.pop(name, None)
        roles = {role for objects in key.type.purposes.values() for role, _ in objects}
        ids = [v.object_id(role) for v in key.versions.values() for role in sorted(roles)]

        def job(ops: HsmOps) -> None:
            for oid in ids:
                ops.destroy(oid)

        self.hsm.run_sync(job, fresh=True)

    # -- HSM objects -----------------------------------------------------------------------

    def _new_version(self, name: str, objects: Objects, number: int) -> KeyVersion:
        hsm_id = secrets.token_bytes(_HSM_ID_BYTES)

        def job(ops: HsmOps) -> None:
            made: list[bytes] = []
            try:
                for role, spec in objects:
                    ops.generate(spec, object_id(hsm_id, role), object_label(name, number, role))
                    made.append(object_id(hsm_id, role))
            except BaseException:
                for oid in made:
                    ops.destroy(oid)
                raise

        self.hsm.run_sync(job)
        return KeyVersion(number, hsm_id, time.time())

    def _destroy_objects(self, objects: Objects, versions: list[KeyVersion]) -> None:
        """Destroy versions this process has just made (so it sees their objects)."""

        def job(ops: HsmOps) -> None:
            for v in versions:
                for role, _ in objects:
                    ops.destroy(v.object_id(role))

        self.hsm.run_sync(job)
