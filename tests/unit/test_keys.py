"""The key registry: versions in SQLite, their objects in a fake HSM, and the rules for
creating, rotating, configuring and deleting keys."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from hsm import KeySpec
from tests.unit.fake_hsm import UNATTENDED, FakeHsm, FakeOps, registry_over
from vault.errors import BadRequest, HsmUnavailable, KeyVersionUnavailable, NotFound
from vault.keys import MAX_ROTATE_PERIOD, MIN_ROTATE_PERIOD, Key, rotate_period, validate_name
from vault.keytypes import KEY_TYPES, Purpose, object_id, object_label
from vault.registry import KeyRegistry
from vault.store import tables
from vault.store.keys import KeyStore


@pytest.fixture
def hsm() -> FakeHsm:
    return FakeHsm()


@pytest.fixture
def registry(tmp_path: Path, hsm: FakeHsm) -> Iterator[KeyRegistry]:
    registry = registry_over(hsm, f"sqlite:///{tmp_path / 'vault.db'}")
    yield registry
    registry.store.db.dispose()


def version_rows(registry: KeyRegistry, name: str) -> int:
    with registry.store.db.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(tables.key_versions)
                .where(tables.key_versions.c.key_name == name)
            ).scalar_one()
        )


def expected_objects(key: Key) -> dict[bytes, str]:
    """Every HSM object the key's versions should have, with its label."""
    return {
        object_id(v.hsm_id, role): object_label(key.name, n, role)
        for n, v in key.versions.items()
        for role, _ in key.objects
    }


# -- create -------------------------------------------------------------------------------


def test_create_makes_version_one_and_its_hsm_object(registry: KeyRegistry, hsm: FakeHsm) -> None:
    key, created = registry.create_sync("backup-share", "aes256-gcm96")
    assert created is True
    assert key.name == "backup-share"
    assert key.type is KEY_TYPES["aes256-gcm96"]
    assert key.latest_version == 1
    assert key.min_decryption_version == 1
    assert key.min_encryption_version == 0
    assert key.deletion_allowed is False
    assert list(key.versions) == [1]
    hsm_id = key.versions[1].hsm_id
    # The key, and the separate HMAC key Transit's `hmac` uses (as Vault keeps one).
    assert hsm.labels() == {
        hsm_id: "vault:backup-share:v1",
        hsm_id + b"hmac": "vault:backup-share:v1:hmac",
    }
    assert hsm.ops.store[hsm_id + b"hmac"].spec is KeySpec.HMAC512
    assert key.versions[1].has_hmac_key is True
    assert version_rows(registry, "backup-share") == 1


def test_create_is_idempotent_and_returns_the_existing_key_unchanged(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    first, _ = registry.create_sync("backup-share", "aes256-gcm96")
    objects_before = hsm.labels()
    again, created = registry.create_sync("backup-share", "hmac", auto_rotate_period=7200)
    assert created is False
    assert again == first
    assert again.type.name == "aes256-gcm96"
    assert again.auto_rotate_period == 0
    assert hsm.labels() == objects_before
    assert version_rows(registry, "backup-share") == 1


@pytest.mark.parametrize("type_name", sorted(KEY_TYPES))
def test_each_key_type_gets_its_objects_and_labels(
    registry: KeyRegistry, hsm: FakeHsm, type_name: str
) -> None:
    key, _ = registry.create_sync(f"k-{type_name}", type_name)
    assert hsm.labels() == expected_objects(key)
    assert len(hsm.labels()) == len(key.objects)


def test_otp_seed_key_has_a_wrap_and_a_bind_object(registry: KeyRegistry, hsm: FakeHsm) -> None:
    key, _ = registry.create_sync("otp-seeds", "otp-seed")
    hsm_id = key.versions[1].hsm_id
    assert hsm.labels() == {
        hsm_id + b"wrap": "vault:otp-seeds:v1:wrap",
        hsm_id + b"bind": "vault:otp-seeds:v1:bind",
    }
    assert hsm.ops.store[hsm_id + b"wrap"].spec is KeySpec.OTP_WRAP
    assert hsm.ops.store[hsm_id + b"bind"].spec is KeySpec.OTP_BIND


def test_create_refuses_unknown_type_without_touching_the_hsm(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    with pytest.raises(BadRequest, match="unknown key type 'aes128'"):
        registry.create_sync("k", "aes128")
    assert hsm.labels() == {}
    with pytest.raises(NotFound):
        registry.get_sync("k")


def test_create_refuses_negative_rotation_period(registry: KeyRegistry, hsm: FakeHsm) -> None:
    with pytest.raises(BadRequest, match="auto_rotate_period"):
        registry.create_sync("k", "aes256-gcm96", auto_rotate_period=-1)
    assert hsm.labels() == {}


def test_create_refuses_rotation_period_under_an_hour(registry: KeyRegistry) -> None:
    with pytest.raises(BadRequest, match="at least one hour"):
        registry.create_sync("k", "aes256-gcm96", auto_rotate_period=60)


def test_a_failed_create_leaves_no_object_and_no_row(registry: KeyRegistry, hsm: FakeHsm) -> None:
    class BindFails(FakeOps):
        def generate(self, spec: KeySpec, key_id: bytes, label: str) -> None:
            if spec is KeySpec.OTP_BIND:
                raise HsmUnavailable()
            super().generate(spec, key_id, label)

    hsm.ops = BindFails()
    with pytest.raises(HsmUnavailable):
        registry.create_sync("otp-seeds", "otp-seed")
    assert hsm.labels() == {}  # the "wrap" object made first was destroyed again
    with pytest.raises(NotFound):
        registry.get_sync("otp-seeds")


INVALID_NAMES = [
    "",
    "-leading-dash",
    ".hidden",
    "_under",
    "has space",
    "slash/name",
    "back\\slash",
    "colon:name",
    "star*",
    "new\nline",
    "trailing\n",
    "caf\u00e9",
    "a" * 129,
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_names_are_refused(registry: KeyRegistry, hsm: FakeHsm, name: str) -> None:
    with pytest.raises(BadRequest, match="key name must be"):
        registry.create_sync(name, "aes256-gcm96")
    with pytest.raises(BadRequest, match="key name must be"):
        validate_name(name)
    assert hsm.labels() == {}


@pytest.mark.parametrize("name", ["a", "A", "0", "key.v2", "key_2", "a-b-c", "a" * 128])
def test_valid_names_are_accepted(registry: KeyRegistry, name: str) -> None:
    assert registry.create_sync(name, "aes256-gcm96")[0].name == name


# -- rotate -------------------------------------------------------------------------------


def test_rotate_accumulates_versions_each_with_its_own_objects(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    first, _ = registry.create_sync("otp-seeds", "otp-seed")
    for expected in (2, 3, 4):
        key = registry.rotate_sync("otp-seeds")
        assert key.latest_version == expected
    assert sorted(key.versions) == [1, 2, 3, 4]
    assert key.versions[1] == first.versions[1]
    assert len({v.hsm_id for v in key.versions.values()}) == 4
    assert hsm.labels() == expected_objects(key)
    assert sorted(hsm.labels().values()) == sorted(
        f"vault:otp-seeds:v{n}:{role}" for n in (1, 2, 3, 4) for role in ("wrap", "bind")
    )
    assert version_rows(registry, "otp-seeds") == 4
    assert key.min_decryption_version == 1


def test_rotate_labels_follow_the_scheme(registry: KeyRegistry, hsm: FakeHsm) -> None:
    registry.create_sync("backup-share", "aes256-gcm96")
    key = registry.rotate_sync("backup-share")
    assert hsm.labels() == expected_objects(key)
    assert sorted(hsm.labels().values()) == [
        "vault:backup-share:v1",
        "vault:backup-share:v1:hmac",
        "vault:backup-share:v2",
        "vault:backup-share:v2:hmac",
    ]


def test_rotate_of_an_unknown_key_is_not_found(registry: KeyRegistry, hsm: FakeHsm) -> None:
    with pytest.raises(NotFound):
        registry.rotate_sync("nope")
    assert hsm.labels() == {}


def test_rotation_is_seen_by_another_registry_on_the_same_database(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    registry.create_sync("backup-share", "aes256-gcm96")
    other = KeyRegistry(registry.store, registry.hsm, cache_ttl=0)
    assert asyncio.run(other.get("backup-share")).latest_version == 1
    registry.rotate_sync("backup-share")
    assert asyncio.run(other.get("backup-share")).latest_version == 2


# -- configure ----------------------------------------------------------------------------

PERIOD = r"auto_rotate_period must be 0 \(off\) or at least one hour"


@pytest.fixture
def three(registry: KeyRegistry) -> KeyRegistry:
    registry.create_sync("k", "aes256-gcm96")
    registry.rotate_sync("k")
    registry.rotate_sync("k")
    return registry


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_decryption_version": 4}, "min_decryption_version must be between 1 and the latest"),
        ({"min_decryption_version": 0}, "min_decryption_version must be between 1 and the latest"),
        ({"min_encryption_version": 4}, "min_encryption_version must be between 0 and the latest"),
        ({"min_encryption_version": -1}, "min_encryption_version must be between 0 and the latest"),
        (
            {"min_decryption_version": 3, "min_encryption_version": 2},
            "min_encryption_version must be 0 or at least min_decryption_version",
        ),
        ({"auto_rotate_period": 3599}, PERIOD),
        ({"auto_rotate_period": 1}, PERIOD),
        ({"auto_rotate_period": -3600}, PERIOD),
    ],
)
def test_configure_refuses_with_a_clear_message(
    three: KeyRegistry, changes: dict[str, int], message: str
) -> None:
    before = three.get_sync("k")
    with pytest.raises(BadRequest, match=message):
        three.configure_sync("k", **changes)  # type: ignore[arg-type]
    after = three.get_sync("k")
    assert after == before  # nothing half-applied


def test_configure_refuses_min_encryption_below_an_existing_min_decryption(
    three: KeyRegistry,
) -> None:
    three.configure_sync("k", min_decryption_version=3)
    with pytest.raises(BadRequest, match="at least min_decryption_version"):
        three.configure_sync("k", min_encryption_version=2)


def test_configure_refuses_min_decryption_above_an_existing_min_encryption(
    three: KeyRegistry,
) -> None:
    three.configure_sync("k", min_encryption_version=2)
    with pytest.raises(BadRequest, match="at least min_decryption_version"):
        three.configure_sync("k", min_decryption_version=3)


def test_configure_applies_and_persists(three: KeyRegistry, hsm: FakeHsm) -> None:
    key = three.configure_sync(
        "k",
        min_decryption_version=2,
        min_encryption_version=3,
        deletion_allowed=True,
        auto_rotate_period=3600,
    )
    fresh = KeyRegistry(three.store, three.hsm).get_sync("k")
    for seen in (key, fresh):
        assert seen.min_decryption_version == 2
        assert seen.min_encryption_version == 3
        assert seen.deletion_allowed is True
        assert seen.auto_rotate_period == 3600
    # Raising min_decryption_version destroys nothing: every version's object remains.
    assert hsm.labels() == expected_objects(fresh)
    assert three.configure_sync("k", auto_rotate_period=0).auto_rotate_period == 0


def test_configure_of_an_unknown_key_is_not_found(registry: KeyRegistry) -> None:
    with pytest.raises(NotFound):
        registry.configure_sync("nope", deletion_allowed=True)


# -- delete -------------------------------------------------------------------------------


def test_delete_is_refused_unless_allowed(registry: KeyRegistry, hsm: FakeHsm) -> None:
    registry.create_sync("backup-share", "aes256-gcm96")
    objects = hsm.labels()
    with pytest.raises(BadRequest, match="deletion is not allowed"):
        registry.delete_sync("backup-share")
    assert registry.get_sync("backup-share").latest_version == 1
    assert hsm.labels() == objects
    assert version_rows(registry, "backup-share") == 1


def test_delete_removes_rows_and_destroys_every_object(registry: KeyRegistry, hsm: FakeHsm) -> None:
    registry.create_sync("keep", "aes256-gcm96")
    kept = hsm.labels()
    registry.create_sync("otp-seeds", "otp-seed")
    registry.rotate_sync("otp-seeds")
    key = registry.configure_sync("otp-seeds", deletion_allowed=True)
    doomed = expected_objects(key)
    assert len(doomed) == 4
    asyncio.run(registry.get("otp-seeds"))  # warm the cache: delete must drop it too
    registry.delete_sync("otp-seeds", by=UNATTENDED)
    with pytest.raises(NotFound):
        registry.get_sync("otp-seeds")
    with pytest.raises(NotFound):
        asyncio.run(registry.get("otp-seeds"))
    assert version_rows(registry, "otp-seeds") == 0
    assert not any(hsm.ops.exists(oid) for oid in doomed)
    assert hsm.labels() == kept
    assert asyncio.run(registry.names()) == ["keep"]


def test_a_deleted_name_can_be_created_afresh(registry: KeyRegistry) -> None:
    old, _ = registry.create_sync("k", "aes256-gcm96")
    registry.rotate_sync("k")
    registry.configure_sync("k", deletion_allowed=True)
    registry.delete_sync("k", by=UNATTENDED)
    new, created = registry.create_sync("k", "hmac")
    assert created is True
    assert new.latest_version == 1
    assert new.type.name == "hmac"
    assert new.versions[1].hsm_id != old.versions[1].hsm_id


def test_names_are_listed_sorted(registry: KeyRegistry) -> None:
    for name in ("b", "a", "c"):
        registry.create_sync(name, "aes256-gcm96")
    assert asyncio.run(registry.names()) == ["a", "b", "c"]


def test_delete_reads_the_token_afresh_first(registry: KeyRegistry, hsm: FakeHsm) -> None:
    """Another process's objects may be out of this one's view until it re-reads the token
    (SoftHSM 2.6): the destroying job runs after a fresh read."""
    registry.create_sync("k", "aes256-gcm96")
    registry.configure_sync("k", deletion_allowed=True)
    before = hsm.fresh_jobs
    registry.delete_sync("k", by=UNATTENDED)
    assert hsm.fresh_jobs == before + 1
    assert hsm.labels() == {}


# -- purposes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "default"),
    [
        ("aes256-gcm96", Purpose.ENCRYPTION),
        ("hmac", Purpose.MAC),
        ("ecdsa-p256", Purpose.SIGNING),
        ("ed25519", Purpose.SIGNING),
        ("rsa-3072", Purpose.SIGNING),
        ("otp-seed", Purpose.OTP),
    ],
)
def test_each_type_has_a_default_purpose(
    registry: KeyRegistry, type_name: str, default: Purpose
) -> None:
    key, _ = registry.create_sync(f"k-{type_name}", type_name)
    assert key.purpose is default
    assert KeyRegistry(registry.store, registry.hsm).get_sync(key.name).purpose is default


@pytest.mark.parametrize(
    ("type_name", "purpose", "spec"),
    [
        ("ecdsa-p256", "key-agreement", KeySpec.EC_P256_ECDH),
        ("rsa-3072", "decryption", KeySpec.RSA3072_OAEP),
        ("ecdsa-p256", "signing", KeySpec.EC_P256),
        ("rsa-3072", "signing", KeySpec.RSA3072),
    ],
)
def test_a_purpose_decides_what_the_hsm_objects_are(
    registry: KeyRegistry, hsm: FakeHsm, type_name: str, purpose: str, spec: KeySpec
) -> None:
    key, _ = registry.create_sync("k", type_name, purpose=purpose)
    assert key.purpose.value == purpose
    assert hsm.ops.store[key.versions[1].object_id()].spec is spec
    rotated = registry.rotate_sync("k")
    assert hsm.ops.store[rotated.versions[2].object_id()].spec is spec


@pytest.mark.parametrize(
    ("type_name", "purpose"),
    [
        ("aes256-gcm96", "signing"),
        ("hmac", "encryption"),
        ("ed25519", "decryption"),
        ("rsa-3072", ""),
    ],
)
def test_a_purpose_the_type_cannot_serve_is_refused_before_the_hsm(
    registry: KeyRegistry, hsm: FakeHsm, type_name: str, purpose: str
) -> None:
    with pytest.raises(BadRequest, match="serves only these purposes"):
        registry.create_sync("k", type_name, purpose=purpose)
    assert hsm.labels() == {}


def test_a_key_is_refused_for_what_it_was_not_made_for(registry: KeyRegistry) -> None:
    key, _ = registry.create_sync("k", "rsa-3072", purpose="decryption")
    key.check_use("open")
    for operation in ("sign", "verify", "encrypt", "hmac"):
        with pytest.raises(BadRequest, match=f"^key cannot be used for {operation}$"):
            key.check_use(operation)


def test_set_purpose_moves_the_key_to_a_new_version_made_for_it(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    """The upgrade path for keys made before purposes: the new latest version's objects
    serve the new purpose, and deleting the key still destroys every version's objects."""
    registry.create_sync("k", "rsa-3072")
    key = registry.rotate_sync("k", purpose="decryption")
    assert key.purpose is Purpose.DECRYPTION
    assert key.latest_version == 2
    assert hsm.ops.store[key.versions[2].object_id()].spec is KeySpec.RSA3072_OAEP
    assert hsm.ops.store[key.versions[1].object_id()].spec is KeySpec.RSA3072
    registry.configure_sync("k", deletion_allowed=True)
    registry.delete_sync("k", by=UNATTENDED)
    assert hsm.labels() == {}


def test_rotate_if_latest_rotates_only_that_version(registry: KeyRegistry) -> None:
    registry.create_sync("k", "aes256-gcm96")
    assert registry.rotate_sync("k", if_latest=1).latest_version == 2
    assert registry.rotate_sync("k", if_latest=1).latest_version == 2  # already moved on
    assert registry.rotate_sync("k", if_latest=2).latest_version == 3


# -- the cache ----------------------------------------------------------------------------


def test_a_version_named_by_a_caller_is_read_at_once(registry: KeyRegistry) -> None:
    registry.create_sync("k", "aes256-gcm96")
    here = KeyRegistry(registry.store, registry.hsm, cache_ttl=3600)
    assert asyncio.run(here.get("k")).latest_version == 1
    registry.rotate_sync("k")  # on "another replica"
    assert asyncio.run(here.get("k")).latest_version == 1  # cached
    assert asyncio.run(here.get("k", newest=2)).latest_version == 2


def test_a_raised_min_decryption_version_is_enforced_within_the_cache_time(
    registry: KeyRegistry,
) -> None:
    registry.create_sync("k", "aes256-gcm96")
    registry.rotate_sync("k")
    ttl = 0.2
    here = KeyRegistry(registry.store, registry.hsm, cache_ttl=ttl)
    asyncio.run(here.get("k")).version_to_check(1)
    raised_at = time.monotonic()
    registry.configure_sync("k", min_decryption_version=2)  # on "another replica"
    while True:
        key = asyncio.run(here.get("k"))
        if key.min_decryption_version == 2:
            break
        assert time.monotonic() - raised_at < ttl
        time.sleep(0.01)
    with pytest.raises(KeyVersionUnavailable):
        key.version_to_check(1)


def test_an_older_read_never_replaces_a_newer_one_in_the_cache(registry: KeyRegistry) -> None:
    registry.create_sync("k", "aes256-gcm96")
    old = registry.get_sync("k")
    newer = registry.rotate_sync("k")
    registry._remember(time.monotonic() - 10, old)  # a slow read that began long ago
    assert asyncio.run(registry.get("k")) == newer


class CountedLoads:
    """A registry's ``store.load``, wrapped: counts the reads, and holds each one's result
    until the test lets it go (so that callers arrive while a read is in flight)."""

    def __init__(self, registry: KeyRegistry) -> None:
        self.count = 0
        self.release = threading.Event()
        self._load = registry.store.load
        registry.store.load = self  # type: ignore[method-assign]

    def __call__(self, name: str) -> Key:
        self.count += 1
        key = self._load(name)
        assert self.release.wait(5)
        return key

    async def begun(self, reads: int) -> None:
        """Wait (at most a second) until ``reads`` loads are under way."""
        for _ in range(500):
            if self.count >= reads:
                return
            await asyncio.sleep(0.002)


@pytest.fixture
def counted(registry: KeyRegistry) -> tuple[KeyRegistry, CountedLoads]:
    """Key ``k``, and a registry of its own over the same database and HSM (another
    replica's, without a cache) whose reads are counted and held."""
    registry.create_sync("k", "aes256-gcm96")
    here = KeyRegistry(KeyStore(registry.store.db), registry.hsm, cache_ttl=0)
    return here, CountedLoads(here)


async def _started(loads: CountedLoads, reads: int) -> None:
    """Let the callers run until ``reads`` loads are under way, then let the loads finish."""
    await loads.begun(reads)
    await asyncio.sleep(0.02)  # room for a read too many to start
    loads.release.set()


def test_callers_of_an_expired_key_share_one_read(
    counted: tuple[KeyRegistry, CountedLoads],
) -> None:
    here, loads = counted

    async def main() -> list[Key]:
        tasks = [asyncio.create_task(here.get("k")) for _ in range(20)]
        await _started(loads, 1)
        return await asyncio.gather(*tasks)

    keys = asyncio.run(main())
    assert loads.count == 1
    assert {key.latest_version for key in keys} == {1}


def test_a_caller_naming_a_newer_version_than_the_shared_read_reads_again(
    registry: KeyRegistry, counted: tuple[KeyRegistry, CountedLoads]
) -> None:
    here, loads = counted

    async def main() -> tuple[Key, Key]:
        first = asyncio.create_task(here.get("k"))
        await loads.begun(1)
        # The read in flight began before this rotation; a ciphertext of v2 then arrives.
        await asyncio.to_thread(registry.rotate_sync, "k")
        second = asyncio.create_task(here.get("k", newest=2))
        await asyncio.sleep(0.02)
        loads.release.set()
        return await first, await second

    first, second = asyncio.run(main())
    assert loads.count == 2
    assert (first.latest_version, second.latest_version) == (1, 2)


def test_a_caller_that_gives_up_leaves_the_shared_read_to_the_others(
    counted: tuple[KeyRegistry, CountedLoads],
) -> None:
    here, loads = counted

    async def main() -> Key:
        impatient = asyncio.create_task(here.get("k"))
        patient = asyncio.create_task(here.get("k"))
        await loads.begun(1)
        impatient.cancel()
        await asyncio.sleep(0.01)
        loads.release.set()
        with pytest.raises(asyncio.CancelledError):
            await impatient
        return await patient

    assert asyncio.run(main()).latest_version == 1
    assert loads.count == 1


def test_a_read_in_flight_on_one_event_loop_is_not_joined_from_another(
    counted: tuple[KeyRegistry, CountedLoads],
) -> None:
    here, loads = counted

    async def on_the_first_loop() -> tuple[Key, Key]:
        first = asyncio.create_task(here.get("k"))
        await loads.begun(1)
        # Meanwhile a caller on a loop of its own (another thread) reads for itself.
        other = asyncio.create_task(asyncio.to_thread(lambda: asyncio.run(here.get("k"))))
        await loads.begun(2)
        loads.release.set()
        return await other, await first

    other, first = asyncio.run(on_the_first_loop())
    assert loads.count == 2
    assert other.latest_version == first.latest_version == 1


def test_a_shared_read_that_finds_no_key_fails_every_caller(
    counted: tuple[KeyRegistry, CountedLoads],
) -> None:
    here, loads = counted

    async def main() -> list[BaseException | Key]:
        tasks = [asyncio.create_task(here.get("absent")) for _ in range(5)]
        await _started(loads, 1)
        return await asyncio.gather(*tasks, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert loads.count == 1
    assert all(isinstance(outcome, NotFound) for outcome in outcomes)
    assert here._reads == {}  # a later caller reads afresh


# -- rotation periods -----------------------------------------------------------------------


@given(
    value=st.one_of(
        st.text(max_size=40),
        st.from_regex(r"-?[0-9]{0,25}(\.[0-9]{0,12})?(e[0-9]{1,4})?[smhdHP]?", fullmatch=True),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
    )
)
def test_a_rotation_period_is_a_valid_number_of_seconds_or_a_bad_request(value: object) -> None:
    try:
        seconds = rotate_period(value)  # type: ignore[arg-type]
    except BadRequest:
        return
    assert seconds == 0 or MIN_ROTATE_PERIOD <= seconds <= MAX_ROTATE_PERIOD


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("24h", 86400), ("1.5h", 5400), ("3600s", 3600), ("1d", 86400), ("", 0), ("0", 0), (0, 0)],
)
def test_rotation_periods_in_vaults_forms(value: int | str, seconds: int) -> None:
    assert rotate_period(value) == seconds


@pytest.mark.parametrize("value", ["86400.0", 86400.5, 86400.0, "1e400s", 10**23, True, "1h30m"])
def test_rotation_periods_vault_refuses(value: object) -> None:
    with pytest.raises(BadRequest, match="auto_rotate_period"):
        rotate_period(value)  # type: ignore[arg-type]
