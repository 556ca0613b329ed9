"""Trim (Vault's checks in Vault's order), automatic rotation exactly once per period across
processes, and reconcile's findings and repairs — over the fake HSM."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from hsm import KeySpec
from tests.unit.fake_hsm import UNATTENDED, FakeHsm, registry_over
from vault.errors import BadRequest, HsmUnavailable
from vault.keytypes import KEY_TYPES
from vault.reconcile import Reconciler
from vault.registry import KeyRegistry
from vault.rotation import AutoRotation
from vault.store.leases import Leases
from vault.store.tables import key_versions, keys


@pytest.fixture
def hsm() -> FakeHsm:
    return FakeHsm()


@pytest.fixture
def registry(tmp_path: Path, hsm: FakeHsm) -> Iterator[KeyRegistry]:
    registry = registry_over(hsm, f"sqlite:///{tmp_path / 'vault.db'}", cache_ttl=0)
    yield registry
    registry.store.db.dispose()


# An aes256-gcm96 version is two HSM objects: the AES key and its HMAC key.
_OBJECTS_PER_VERSION = len(KEY_TYPES["aes256-gcm96"].roles)


def five_versions(registry: KeyRegistry, **config: int) -> None:
    registry.create_sync("k1", "aes256-gcm96")
    for _ in range(4):
        registry.rotate_sync("k1")
    if config:
        registry.configure_sync("k1", **config)  # type: ignore[arg-type]


# -- trim: docs/transit-reference.md and OpenBao's answers, case by case -------------------------

VAULT_TRIM_CASES = [
    ({}, None, "missing min_available_version"),
    ({}, 2, "cannot be set when minimum encryption version is not set"),
    (
        {"min_decryption_version": 3, "min_encryption_version": 4},
        4,
        "greater than minimum decryption",
    ),
    ({"min_decryption_version": 4}, 3, "cannot be set when minimum encryption version is not set"),
    (
        {"min_decryption_version": 4, "min_encryption_version": 4},
        5,
        "greater than minmum encryption",
    ),
    ({"min_decryption_version": 4, "min_encryption_version": 4}, 0, "should be positive"),
    ({"min_decryption_version": 4, "min_encryption_version": 4}, -1, "cannot be decremented"),
]


@pytest.mark.parametrize(("config", "floor", "message"), VAULT_TRIM_CASES)
def test_trim_refusals_in_vaults_words(
    registry: KeyRegistry, config: dict[str, int], floor: int | None, message: str
) -> None:
    five_versions(registry, **config)
    with pytest.raises(BadRequest, match=message):
        registry.trim_sync("k1", floor, by=UNATTENDED)
    assert len(registry.get_sync("k1").versions) == 5


def test_trim_then_floor_rules(registry: KeyRegistry, hsm: FakeHsm) -> None:
    five_versions(registry, min_decryption_version=4, min_encryption_version=4)
    key, gone = registry.trim_sync("k1", 2, by=UNATTENDED)
    assert (key.min_available_version, gone, sorted(key.versions)) == (2, [1], [2, 3, 4, 5])
    again, none = registry.trim_sync("k1", 2, by=UNATTENDED)  # the same floor: no change
    assert none == []
    assert again.min_available_version == 2
    with pytest.raises(BadRequest, match="cannot be decremented"):
        registry.trim_sync("k1", 1, by=UNATTENDED)
    key, gone = registry.trim_sync("k1", 4, by=UNATTENDED)
    assert gone == [2, 3]
    assert len(hsm.ops.store) == 2 * _OBJECTS_PER_VERSION
    with pytest.raises(BadRequest, match="should not be less then min available version"):
        registry.configure_sync("k1", min_decryption_version=3, by=UNATTENDED)
    with pytest.raises(BadRequest, match="below min_decryption_version"):
        key.version_to_check(2)  # trimmed: "too old", as in Vault, not "does not exist"


def test_trim_leaves_orphans_not_errors_when_the_hsm_is_away(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    five_versions(registry, min_decryption_version=3, min_encryption_version=3)

    def down(job: object, **_: object) -> object:
        raise HsmUnavailable()

    original = hsm.run_sync
    hsm.run_sync = down  # type: ignore[assignment, method-assign]
    try:
        key, gone = registry.trim_sync("k1", 3, by=UNATTENDED)
    finally:
        hsm.run_sync = original  # type: ignore[method-assign]
    assert gone == [1, 2]
    assert sorted(key.versions) == [3, 4, 5]
    report = Reconciler(registry, grace=0).check()
    assert len(report.orphans) == 2 * _OBJECTS_PER_VERSION
    assert Reconciler(registry, grace=0).repair(report, UNATTENDED).clean
    assert len(hsm.ops.store) == 3 * _OBJECTS_PER_VERSION


# -- automatic rotation --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_many_processes_rotate_exactly_once_per_period(registry: KeyRegistry) -> None:
    clock = Clock()
    registry.min_rotate_period = 10
    registry.create_sync("auto", "aes256-gcm96", auto_rotate_period=10)
    registry.create_sync("manual", "aes256-gcm96")
    with registry.store.db.engine.begin() as conn:  # born at the clock's time zero
        conn.execute(update(key_versions).values(created_at=clock.now))
    workers = [
        AutoRotation(
            KeyRegistry(registry.store, registry.hsm, 0, min_rotate_period=10, clock=clock),
            Leases(registry.store.db),
            interval=1.0,
            clock=clock,
        )
        for _ in range(4)
    ]
    rotated: list[tuple[str, int]] = []
    for step in range(100):  # 50 seconds in half-second steps; every worker sweeps each step
        clock.now += 0.5
        for worker in workers:
            rotated += worker.sweep()
        if step == 40:  # the lease holder dies: another takes over once the lease runs out
            workers = workers[1:]
    assert [v for _, v in rotated] == [2, 3, 4, 5, 6]
    assert {n for n, _ in rotated} == {"auto"}
    assert registry.get_sync("manual").latest_version == 1


def test_a_rotation_from_a_stale_version_changes_nothing(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    key, _ = registry.create_sync("k", "aes256-gcm96")
    assert registry.rotate_from(key) is not None
    assert registry.rotate_from(key) is None  # someone rotated since `key` was read
    assert registry.get_sync("k").latest_version == 2
    assert len(hsm.ops.store) == 2 * _OBJECTS_PER_VERSION  # the loser's objects were destroyed


# -- reconcile -----------------------------------------------------------------------------------


def test_reconcile_finds_and_repairs_orphans_and_lost_versions(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    registry.create_sync("k", "aes256-gcm96")
    registry.create_sync("pair", "ecdsa-p256")
    orphan = secrets.token_bytes(16)
    hsm.ops.generate(KeySpec.EC_P256, orphan, "vault:k:v9")  # a crash before the commit
    hsm.ops.generate(KeySpec.AES256, b"other-app", "someone-else")
    lost = secrets.token_bytes(16)
    with registry.store.db.engine.begin() as conn:  # a version whose object is gone
        conn.execute(
            insert(key_versions).values(key_name="k", version=2, hsm_id=lost, created_at=1.0)
        )
        conn.execute(update(keys).where(keys.c.name == "k").values(latest_version=2))
    report = Reconciler(registry, grace=0).check()
    assert [o.key_id for o in report.orphans] == [orphan]
    assert [(v.key, v.version) for v in report.lost] == [("k", 2)]
    assert [o.label for o in report.foreign] == ["someone-else"]
    fixed = Reconciler(registry, grace=0).repair(report, UNATTENDED)
    assert fixed.clean
    assert len(fixed.repaired) == 2
    key = registry.get_sync("k")
    assert sorted(key.versions) == [1, 3]  # the lost latest was replaced, then forgotten
    assert orphan not in hsm.ops.store
    assert b"other-app" in hsm.ops.store


def test_repair_spares_an_orphan_that_got_its_row_during_the_grace(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    registry.create_sync("k", "aes256-gcm96")
    pending = secrets.token_bytes(16)
    hsm.ops.generate(KeySpec.AES256, pending, "vault:k:v2")
    report = Reconciler(registry, grace=0).check()
    assert [o.key_id for o in report.orphans] == [pending]

    def commit_meanwhile(_: float) -> None:  # the rotation commits while reconcile waits
        from vault.keys import KeyVersion

        registry.store.add_version("k", 1, KeyVersion(2, pending, 2.0, has_hmac_key=False))

    fixed = Reconciler(registry, grace=1, sleep=commit_meanwhile).repair(report, UNATTENDED)
    assert fixed.clean
    assert fixed.repaired == []
    assert pending in hsm.ops.store
    assert registry.get_sync("k").versions[2].hsm_id == pending
