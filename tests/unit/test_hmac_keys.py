"""Transit HMAC with every key type (a separate HMAC key per version, as in Vault), and the
versions made before the vault kept one: refused with a clear reason until rotated."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac as std_hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from hsm import KeySpec
from tests.unit.fake_hsm import FakeHsm, registry_over
from vault.approvals import Authority
from vault.digest import Digests, Mac, MacCheck
from vault.errors import BadRequest
from vault.keytypes import HMAC_ROLE, KEY_TYPES, Purpose, mac_object
from vault.registry import KeyRegistry
from vault.store import Database, make_engine, tables
from vault.store.keys import KeyStore
from vault.store.migrations import upgrade

TRANSIT_TYPES = ("aes256-gcm96", "ecdsa-p256", "ed25519", "rsa-3072", "hmac")


@pytest.fixture
def hsm() -> FakeHsm:
    return FakeHsm()


@pytest.fixture
def registry(tmp_path: Path, hsm: FakeHsm) -> Iterator[KeyRegistry]:
    registry = registry_over(hsm, f"sqlite:///{tmp_path / 'vault.db'}", cache_ttl=0.0)
    yield registry
    registry.store.db.dispose()


def mac(result: Mac | Exception) -> str:
    assert isinstance(result, Mac), result
    return result.value


def _mac_of(type_name: str, purpose: Purpose | None = None) -> object:
    kind = KEY_TYPES[type_name]
    chosen = purpose or kind.default_purpose
    return mac_object(kind.purposes[chosen], chosen)


def test_mac_object_of_each_type() -> None:
    assert _mac_of("hmac") == ("", KeySpec.HMAC512)
    for name in ("aes256-gcm96", "ecdsa-p256", "ed25519", "rsa-3072"):
        assert _mac_of(name) == (HMAC_ROLE, KeySpec.HMAC512)
    assert _mac_of("otp-seed") is None  # its "bind" HMAC key is not Transit's
    # The partners' keys are one object each: they do not MAC.
    assert _mac_of("rsa-3072", Purpose.DECRYPTION) is None
    assert _mac_of("ecdsa-p256", Purpose.KEY_AGREEMENT) is None


@pytest.mark.parametrize("type_name", TRANSIT_TYPES)
def test_hmac_with_every_transit_key_type(
    registry: KeyRegistry, hsm: FakeHsm, type_name: str
) -> None:
    registry.create_sync("k", type_name)
    digests = Digests(registry, registry.hsm)
    for algorithm, size in (("sha2-224", 28), ("sha2-256", 32), ("sha2-512", 64)):
        value = mac(asyncio.run(digests.hmac("k", [b"m"], algorithm))[0])
        assert value.startswith("vault:v1:")
        checks = [MacCheck(b"m", value), MacCheck(b"n", value)]
        assert asyncio.run(digests.verify_hmac("k", checks, algorithm)) == [True, False]
        assert len(base64.b64decode(value.split(":")[2])) == size


def test_the_hmac_key_is_not_the_key_itself(registry: KeyRegistry, hsm: FakeHsm) -> None:
    """An aes key's HMAC comes from its own HMAC object, never from the AES key."""
    key, _ = registry.create_sync("k", "aes256-gcm96")
    digests = Digests(registry, registry.hsm)
    value = mac(asyncio.run(digests.hmac("k", [b"m"]))[0])
    secret = hsm.ops.store[key.versions[1].object_id(HMAC_ROLE)].secret
    expected = std_hmac.new(secret, b"m", hashlib.sha256).digest()
    assert base64.b64decode(value.split(":")[2]) == expected


def test_otp_seed_keys_do_not_hmac(registry: KeyRegistry) -> None:
    registry.create_sync("seeds", "otp-seed")
    digests = Digests(registry, registry.hsm)
    with pytest.raises(BadRequest, match="key cannot be used for hmac"):
        asyncio.run(digests.hmac("seeds", [b"m"]))


def test_a_version_without_an_hmac_key_is_refused_until_rotated(
    registry: KeyRegistry, hsm: FakeHsm
) -> None:
    key, _ = registry.create_sync("k", "ed25519")
    digests = Digests(registry, registry.hsm)
    old = mac(asyncio.run(digests.hmac("k", [b"m"]))[0])
    # As version 1 would be had it been made before the vault kept an HMAC key per version.
    hsm.ops.destroy(key.versions[1].object_id(HMAC_ROLE))
    with registry.store.db.engine.begin() as conn:
        conn.execute(update(tables.key_versions).values(hmac_key=False))
    with pytest.raises(BadRequest, match=r"key version 1 has no HMAC key.*rotate the key"):
        asyncio.run(digests.hmac("k", [b"m"]))
    (refused,) = asyncio.run(digests.verify_hmac("k", [MacCheck(b"m", old)]))
    assert isinstance(refused, BadRequest)
    assert "no HMAC key" in str(refused)
    rotated = registry.rotate_sync("k")
    assert rotated.versions[2].has_hmac_key
    assert mac(asyncio.run(digests.hmac("k", [b"m"]))[0]).startswith("vault:v2:")
    with pytest.raises(BadRequest, match="key version 1 has no HMAC key"):
        asyncio.run(digests.hmac("k", [b"m"], None, 1))
    # Deleting the key destroys what each version really has, and nothing else.
    registry.configure_sync("k", deletion_allowed=True)
    registry.delete_sync("k", by=Authority("test", exempt=True))
    assert hsm.labels() == {}


def test_migration_marks_existing_versions_as_without_an_hmac_key(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    now = time.time()
    with engine.begin() as conn:  # the columns of revision 0001, as an old database had them
        conn.exec_driver_sql(
            "INSERT INTO keys (name, type, latest_version, min_decryption_version, "
            "min_encryption_version, deletion_allowed, auto_rotate_period, created_at, "
            f"updated_at) VALUES ('old', 'aes256-gcm96', 1, 1, 0, 0, 0, {now}, {now})"
        )
        conn.exec_driver_sql(
            "INSERT INTO key_versions (key_name, version, hsm_id, created_at) "
            "VALUES ('old', 1, x'00112233', 0)"
        )
    upgrade(engine)
    key = KeyStore(Database(engine)).load("old")
    assert key.versions[1].has_hmac_key is False
    assert key.versions[1].roles(key.type) == [""]
    engine.dispose()
