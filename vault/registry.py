"""The key registry: versions in the database, their objects in the HSM, a short cache.

Each version's HSM object is created before its row is committed: a crash in between leaves
an orphan object (harmless, never used, found by reconcile), never a row without a key.

Every change is a :class:`vault.events.LifecycleEvent` naming who made it (an officer, a
service, or the vault itself for automatic rotation). Deleting, trimming and lowering
``min_decryption_version`` run only under two officers' approvals (``vault.approvals``).

The cache keeps the hot path free of database round trips; other replicas see a rotation or
a configuration change (a raised ``min_decryption_version`` included) within ``cache_ttl``
seconds, and a value naming a version newer than the cached key makes the registry read the
key again at once (``get(newest=...)``), so a rotation on one replica is usable everywhere
immediately. When an entry expires under load, the requests that find it expired share one
read of the key (one per key at a time) instead of each sending its own to the database.

Deleting or trimming destroys every version's objects after reading the token afresh:
SoftHSM 2.6 hides from a process the objects others made once it has written to the token
itself.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hsm import HsmOps, KeySpec
from vault.approvals import Action, Authority, DualControl
from vault.errors import BadRequest, Forbidden, NotFound, StoreUnavailable, Unavailable
from vault.events import Detail, EventSink, LifecycleEvent, LogSink
from vault.flights import Flights
from vault.hsm import Hsm
from vault.keys import MIN_ROTATE_PERIOD, Key, KeyVersion, rotate_period, validate_name
from vault.keytypes import HMAC_ROLE, key_type, object_id, object_label
from vault.policy import DeclaredKey
from vault.store.keys import KeyStore

T = TypeVar("T")
Objects = tuple[tuple[str, KeySpec], ...]
log = logging.getLogger("vault.registry")

_HSM_ID_BYTES = 16
_ROTATE_ATTEMPTS = 5


VAULT = Authority("vault")


@dataclass(frozen=True, slots=True)
class Plan:
    """What bringing one declared key in line does (or, in a dry run, would do)."""

    name: str
    outcome: str  # "create", "configure", "unchanged" or "conflict"
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    reason: str = ""


class KeyRegistry:
    def __init__(
        self,
        store: KeyStore,
        hsm: Hsm,
        cache_ttl: float = 1.0,
        *,
        events: EventSink | None = None,
        dual_control: DualControl | None = None,
        min_rotate_period: int = MIN_ROTATE_PERIOD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clock = clock  # when a version is made (automatic rotation counts from it)
        self.hsm = hsm
        self.events: EventSink = events or LogSink()
        self.dual_control = dual_control
        self.min_rotate_period = min_rotate_period
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, Key]] = {}
        self._reads: Flights[str, Key] = Flights()

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
        joined = name in self._reads
        key = await self._shared_read(name)
        if joined and newest is not None and newest > key.latest_version:
            # The read joined began before this call; version ``newest`` was made before
            # it (something names it), so a read that begins now sees it.
            key = await self._shared_read(name)
        return key

    async def _shared_read(self, name: str) -> Key:
        """Join the read of ``name`` in flight, or start one."""
        return await asyncio.shield(self._reads.join(name, lambda: self._load(name)))

    async def _load(self, name: str) -> Key:
        hit = self._cache.get(name)
        read_at = time.monotonic()
        try:
            key = await self.store.db.run(lambda: self.store.load(name))
        except NotFound:
            if hit is not None:
                self._cache.pop(name, None)
                await self._forget_seeds(hit[1], None)
            raise
        if hit is not None:
            await self._forget_seeds(hit[1], key)
        return self._remember(read_at, key)

    async def _forget_seeds(self, before: Key, now: Key | None) -> None:
        """OTP seeds this process's HSM session keeps unwrapped under versions that are gone
        (trimmed, or the key deleted, by any process) are destroyed once this one sees it."""
        if not before.type.otp:
            return
        kept = now.versions if now is not None else {}
        wrap_ids = [v.object_id("wrap") for n, v in before.versions.items() if n not in kept]
        if not wrap_ids:
            return

        def job(ops: HsmOps) -> None:
            for wrap_id in wrap_ids:
                ops.forget_seeds(wrap_id)

        try:
            await self.hsm.run(job)
        except Unavailable:
            log.info("cached OTP seeds of removed versions go with the HSM session")

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
        """Drop the cached key and any read in flight (callers after this read afresh)."""
        self._cache.pop(name, None)
        self._reads.pop(name, None)

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
        *,
        by: Authority = VAULT,
    ) -> tuple[Key, bool]:
        """Create ``name`` with version 1 for ``purpose`` (the type's default if ``None``); an
        existing key is returned unchanged."""
        validate_name(name)
        kind = key_type(type_name)
        chosen = kind.purpose(purpose)
        period = rotate_period(auto_rotate_period, self.min_rotate_period)
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
        else:
            self._emit(
                "key.create",
                by,
                name,
                1,
                type=kind.name,
                purpose=chosen.value,
                auto_rotate_period=period,
            )
        return self.get_sync(name), created

    def rotate_sync(
        self,
        name: str,
        *,
        by: Authority = VAULT,
        trigger: str = "request",
        if_latest: int | None = None,
        purpose: str | None = None,
    ) -> Key:
        """Add a version and make it the one that encrypts. ``if_latest``: only if version
        ``if_latest`` is still the latest (how replicas that all see a version's wrap bound
        crossed rotate it once). ``purpose``: the new version, and the key from now on, serve
        this purpose (for keys made before purposes existed: README, "Upgrading")."""
        for _ in range(_ROTATE_ATTEMPTS):
            key = self.get_sync(name)
            if if_latest is not None and key.latest_version != if_latest:
                return key
            rotated = self.rotate_from(key, by=by, trigger=trigger, purpose=purpose)
            if rotated is not None:
                return rotated
        raise StoreUnavailable("key is being rotated concurrently; try again")

    def rotate_from(
        self,
        key: Key,
        *,
        by: Authority = VAULT,
        trigger: str = "request",
        purpose: str | None = None,
    ) -> Key | None:
        """Rotate ``key`` if its latest version is still ``key.latest_version``; ``None`` when
        another rotation got there first (then nothing changed: exactly one of any number
        of concurrent rotations from one version succeeds)."""
        name = key.name
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
        if not moved:  # another rotation won the race: ours was never used
            self._destroy_objects(objects, [version])
            return None
        self.invalidate(name)
        details: dict[str, Detail] = {"trigger": trigger}
        if chosen is not key.purpose:
            details["purpose"] = chosen.value
        self._emit("key.rotate", by, name, version.version, **details)
        return self.get_sync(name)

    def configure_sync(
        self,
        name: str,
        *,
        min_decryption_version: int | None = None,
        min_encryption_version: int | None = None,
        deletion_allowed: bool | None = None,
        auto_rotate_period: int | str | None = None,
        by: Authority = VAULT,
        dry_run: bool = False,
    ) -> Key:
        """Change a key's configuration. Lowering ``min_decryption_version`` makes old
        ciphertexts readable again, so it needs two officers' approval."""
        key = self.get_sync(name)
        changes = self.config_changes(
            key,
            min_decryption_version,
            min_encryption_version,
            deletion_allowed,
            auto_rotate_period,
        )
        if dry_run or not changes:
            return key
        lowered = changes.get("min_decryption_version", key.min_decryption_version)
        if lowered < key.min_decryption_version:
            with self._approved(Action.lower_min_decryption(name, lowered), by) as details:
                self.store.update(name, changes)
        else:
            details = {}
            self.store.update(name, changes)
        self.invalidate(name)
        self._emit("key.config", by, name, None, **details, **changes)
        return self.get_sync(name)

    def config_changes(
        self,
        key: Key,
        min_decryption_version: int | None,
        min_encryption_version: int | None,
        deletion_allowed: bool | None,
        auto_rotate_period: int | str | None,
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if min_decryption_version is not None:
            if not 1 <= min_decryption_version <= key.latest_version:
                raise BadRequest("min_decryption_version must be between 1 and the latest version")
            if min_decryption_version < key.min_available_version:
                # (sic) "then": Vault's own words.
                raise BadRequest(
                    "min decryption version should not be less then min available version"
                )
            if min_decryption_version != key.min_decryption_version:
                changes["min_decryption_version"] = min_decryption_version
        if min_encryption_version is not None:
            if not 0 <= min_encryption_version <= key.latest_version:
                raise BadRequest("min_encryption_version must be between 0 and the latest version")
            if min_encryption_version != key.min_encryption_version:
                changes["min_encryption_version"] = min_encryption_version
        new_min_dec = changes.get("min_decryption_version", key.min_decryption_version)
        new_min_enc = changes.get("min_encryption_version", key.min_encryption_version)
        if new_min_enc and new_min_enc < new_min_dec:
            raise BadRequest("min_encryption_version must be 0 or at least min_decryption_version")
        if deletion_allowed is not None and deletion_allowed != key.deletion_allowed:
            changes["deletion_allowed"] = deletion_allowed
        if auto_rotate_period is not None:
            period = rotate_period(auto_rotate_period, self.min_rotate_period)
            if period != key.auto_rotate_period:
                changes["auto_rotate_period"] = period
        return changes

    def trim_sync(
        self,
        name: str,
        min_available_version: int | None,
        *,
        by: Authority = VAULT,
        dry_run: bool = False,
    ) -> tuple[Key, list[int]]:
        """Destroy the versions below ``min_available_version`` (Vault's trim): their rows,
        then their HSM objects. Refused while ``min_decryption_version`` (or
        ``min_encryption_version``) still needs them. The key and the versions removed (in a
        dry run: that would be)."""
        key = self.get_sync(name)
        floor = key.trim_floor(min_available_version)
        doomed = sorted(n for n in key.versions if n < floor)
        if dry_run or floor == key.min_available_version:
            return key, doomed
        with self._approved(Action.trim_key(name, floor), by) as details:
            gone = self.store.trim(name, floor)
        self.invalidate(name)
        self._destroy_after_commit(key, gone)
        self._emit(
            "key.trim",
            by,
            name,
            None,
            **details,
            min_available_version=floor,
            versions_destroyed=",".join(str(v.version) for v in gone),
        )
        return self.get_sync(name), [v.version for v in gone]

    def delete_sync(self, name: str, *, by: Authority = VAULT, dry_run: bool = False) -> Key:
        """Delete the key, every version and every HSM object of it (only when
        ``deletion_allowed``, and only under two officers' approval)."""
        key = self.get_sync(name)
        if not key.deletion_allowed:
            raise BadRequest("deletion is not allowed for this key")
        if dry_run:
            return key
        with self._approved(Action.delete_key(name), by) as details:
            # Rows first: once they are gone nothing can ask for the objects.
            self.store.delete(name)
        self.invalidate(name)
        self._destroy_after_commit(key, list(key.versions.values()))
        self._emit("key.delete", by, name, None, **details, versions=len(key.versions))
        return key

    def drop_lost_version(self, key: Key, version: int, *, by: Authority = VAULT) -> None:
        """Forget a version whose HSM object is gone for good (reconcile). A lost latest
        version is replaced by a new one first, so the key encrypts again."""
        if version == key.latest_version:
            self.rotate_sync(key.name, by=by, trigger="reconcile")
        self.store.remove_version(key.name, version)
        self.invalidate(key.name)
        self._emit("key.version_lost", by, key.name, version)

    # -- the declarative file (policies/keys.toml) -------------------------------------------

    def plan_declared(self, declared: DeclaredKey) -> Plan:
        try:
            key = self.get_sync(declared.name)
        except NotFound:
            return Plan(declared.name, "create", {"type": (None, declared.type)})
        if key.type.name != declared.type:
            return Plan(
                declared.name,
                "conflict",
                reason=f"declared {declared.type}, but the key is {key.type.name} "
                "(a key's type never changes: declare a new key)",
            )
        purpose = key.type.purpose(declared.purpose)
        if purpose is not key.purpose:
            # A key made before purposes existed got its type's default (README, "Upgrading"):
            # an officer gives it the declared one, never silently.
            return Plan(
                declared.name,
                "conflict",
                reason=f"declared for {purpose.value}, but the key serves {key.purpose.value}: "
                f"run `hsm-vault keys set-purpose {key.name} {purpose.value}`",
            )
        wanted = {
            "auto_rotate_period": (key.auto_rotate_period, declared.auto_rotate_period),
            "deletion_allowed": (key.deletion_allowed, declared.deletion_allowed),
        }
        changes = {k: v for k, v in wanted.items() if v[0] != v[1]}
        return Plan(declared.name, "configure" if changes else "unchanged", changes)

    def apply_declared(self, declared: DeclaredKey, *, by: Authority = VAULT) -> Plan:
        """Create the declared key, or bring an existing one's configuration in line with
        the declaration (idempotent: a second run changes nothing)."""
        plan = self.plan_declared(declared)
        if plan.outcome == "create":
            _, created = self.create_sync(
                declared.name, declared.type, declared.auto_rotate_period, declared.purpose, by=by
            )
            if declared.deletion_allowed:
                self.configure_sync(declared.name, deletion_allowed=True, by=by)
            if not created:  # another officer or replica made it meanwhile
                return self.apply_declared(declared, by=by)
        elif plan.outcome == "configure":
            self.configure_sync(
                declared.name,
                auto_rotate_period=declared.auto_rotate_period,
                deletion_allowed=declared.deletion_allowed,
                by=by,
            )
        return plan

    # -- dual control and events -----------------------------------------------------------

    @contextmanager
    def _approved(self, action: Action, by: Authority) -> Iterator[dict[str, Detail]]:
        if by.exempt:
            yield {"dual_control": "exempt"}
            return
        if self.dual_control is None:
            raise Forbidden(f"{action.describe()} needs dual control, which is not set up here")
        with self.dual_control.authorize(by.approval, action, by.actor) as approvers:
            yield {"approval": by.approval, "approved_by": ",".join(approvers)}

    def _emit(
        self, kind: str, by: Authority, name: str, version: int | None, **details: Detail
    ) -> None:
        self.events.emit(LifecycleEvent(kind, by.actor, name, version, details))

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
        has_hmac_key = any(role == HMAC_ROLE for role, _ in objects)
        return KeyVersion(number, hsm_id, self.clock(), has_hmac_key)

    def _destroy_objects(self, objects: Objects, versions: list[KeyVersion]) -> None:
        """Destroy versions this process has just made (so it sees their objects)."""

        def job(ops: HsmOps) -> None:
            for v in versions:
                for role, _ in objects:
                    ops.destroy(v.object_id(role))

        self.hsm.run_sync(job)

    def _destroy_after_commit(self, key: Key, versions: list[KeyVersion]) -> None:
        """Destroy the objects of versions whose rows are already gone: every object any
        version of the key may have (whatever purpose it was made for), after reading the
        token afresh (whichever process made them). If the HSM is away now, they stay as
        orphans that nothing uses, for ``hsm-vault keys reconcile --repair``."""
        ids = [v.object_id(role) for v in versions for role in v.roles(key.type)]

        def job(ops: HsmOps) -> None:
            for oid in ids:
                ops.destroy(oid)

        try:
            self.hsm.run_sync(job, fresh=True)
        except Unavailable:
            log.warning("%d HSM object(s) of removed versions left for reconcile", len(ids))
