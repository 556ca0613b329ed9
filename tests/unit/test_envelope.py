"""Envelope encryption and the transit operations over it, on a fake HSM and a real SQLite
registry: the byte format, nonce uniqueness, binding to key, version and associated data,
and the key-version rules."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, inspect, select, text
from sqlalchemy.engine import Engine

from tests.unit.fake_hsm import UNATTENDED, FakeHsm, FakeOps, registry_over
from vault import envelope
from vault.envelope import (
    DEK_BYTES,
    FORMAT_V1,
    FORMAT_V2,
    HEADER_BYTES,
    HEADER_V2_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    WRAPPED_DEK_BYTES,
    EncryptItem,
    context,
    context_v2,
    parse,
)
from vault.errors import (
    BadRequest,
    HsmUnavailable,
    InvalidCiphertext,
    KeyVersionUnavailable,
    VaultError,
)
from vault.registry import KeyRegistry
from vault.store import tables
from vault.transit import DecryptItem, Encrypted, Transit
from vault.usage import WrapCounter

ONE_MESSAGE = "invalid ciphertext: message authentication failed"


@dataclass
class Env:
    engine: Engine
    hsm: FakeHsm
    registry: KeyRegistry
    transit: Transit

    def encrypt(
        self, name: str, plaintext: bytes, ad: bytes = b"", version: int | None = None
    ) -> str:
        [result] = asyncio.run(self.transit.encrypt(name, [EncryptItem(plaintext, ad, version)]))
        assert isinstance(result, Encrypted), result
        return result.ciphertext

    def decrypt(self, name: str, ciphertext: str, ad: bytes = b"") -> bytes | VaultError:
        [result] = asyncio.run(self.transit.decrypt(name, [DecryptItem(ciphertext, ad)]))
        return result


def make_env(path: Path) -> Env:
    hsm = FakeHsm()
    registry = registry_over(hsm, f"sqlite:///{path}")
    wraps = WrapCounter(registry.store, lambda n, v: registry.rotate_sync(n, if_latest=v))
    return Env(registry.store.db.engine, hsm, registry, Transit(registry, registry.hsm, wraps))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    made = make_env(tmp_path / "vault.db")
    made.registry.create_sync("backup-share", "aes256-gcm96")
    yield made
    made.engine.dispose()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One registry for the property tests (hypothesis runs many examples per test)."""
    made = make_env(tmp_path_factory.mktemp("envelope") / "vault.db")
    made.registry.create_sync("prop-key", "aes256-gcm96")
    yield made
    made.engine.dispose()


def blob_of(ciphertext: str) -> bytes:
    return base64.b64decode(ciphertext.split(":", 2)[2])


def with_blob(ciphertext: str, blob: bytes) -> str:
    prefix = ciphertext.rsplit(":", 1)[0]
    return f"{prefix}:{base64.b64encode(blob).decode()}"


def assert_invalid(result: object) -> None:
    assert isinstance(result, InvalidCiphertext), result
    assert str(result) == ONE_MESSAGE


# -- round trip and layout ----------------------------------------------------------------


def test_round_trip_and_layout(env: Env) -> None:
    ct = env.encrypt("backup-share", b"third share", b"user-42")
    assert ct.startswith("vault:v1:")
    blob = blob_of(ct)
    assert blob[0] == FORMAT_V1
    assert len(blob) == HEADER_BYTES + len(b"third share") + TAG_BYTES
    assert b"third share" not in blob
    assert env.decrypt("backup-share", ct, b"user-42") == b"third share"


def test_same_plaintext_encrypts_differently_each_time(env: Env) -> None:
    one = blob_of(env.encrypt("backup-share", b"same"))
    two = blob_of(env.encrypt("backup-share", b"same"))
    assert one[1 : 1 + NONCE_BYTES] != two[1 : 1 + NONCE_BYTES]
    assert one[HEADER_BYTES:] != two[HEADER_BYTES:]


def test_empty_plaintext_round_trips(env: Env) -> None:
    ct = env.encrypt("backup-share", b"")
    assert env.decrypt("backup-share", ct) == b""


def test_one_hsm_job_per_call_however_large_the_batch(env: Env) -> None:
    before = env.hsm.jobs
    items = [EncryptItem(bytes([i]), b"") for i in range(10)]
    results = asyncio.run(env.transit.encrypt("backup-share", items))
    assert env.hsm.jobs == before + 1
    decrypts = [DecryptItem(r.ciphertext, b"") for r in results if isinstance(r, Encrypted)]
    assert len(decrypts) == 10
    plain = asyncio.run(env.transit.decrypt("backup-share", decrypts))
    assert env.hsm.jobs == before + 2
    assert plain == [bytes([i]) for i in range(10)]


# -- batches ------------------------------------------------------------------------------


def test_encrypt_batch_fails_item_by_item_in_order(env: Env) -> None:
    passed_through = BadRequest("plaintext is not valid base64")
    items: list[EncryptItem | VaultError] = [
        EncryptItem(b"first", b""),
        passed_through,
        EncryptItem(b"third", b"", key_version=7),  # no such version
        EncryptItem(b"fourth", b"ad"),
    ]
    results = asyncio.run(env.transit.encrypt("backup-share", items))
    assert len(results) == 4
    assert isinstance(results[0], Encrypted)
    assert results[1] is passed_through
    assert isinstance(results[2], BadRequest)
    assert isinstance(results[3], Encrypted)
    assert env.decrypt("backup-share", results[0].ciphertext) == b"first"
    assert env.decrypt("backup-share", results[3].ciphertext, b"ad") == b"fourth"


def test_encrypt_batch_of_only_errors_keeps_order(env: Env) -> None:
    errors: list[EncryptItem | VaultError] = [BadRequest("one"), BadRequest("two")]
    results = asyncio.run(env.transit.encrypt("backup-share", errors))
    assert [str(r) for r in results] == ["one", "two"]


def test_decrypt_batch_fails_item_by_item_in_order(env: Env) -> None:
    a = env.encrypt("backup-share", b"alpha", b"ad-a")
    b = env.encrypt("backup-share", b"bravo")
    passed_through = BadRequest("associated_data is not valid base64")
    items: list[DecryptItem | VaultError] = [
        DecryptItem(a, b"ad-a"),
        DecryptItem("vault:v1:garbage", b""),
        DecryptItem(a, b"other"),  # wrong associated data
        passed_through,
        DecryptItem(b.replace("vault:v1:", "vault:v9:"), b""),  # no such version
        DecryptItem(b, b""),
    ]
    results = asyncio.run(env.transit.decrypt("backup-share", items))
    assert results[0] == b"alpha"
    assert_invalid(results[1])
    assert_invalid(results[2])
    assert results[3] is passed_through
    assert isinstance(results[4], KeyVersionUnavailable)
    assert results[5] == b"bravo"


def test_rewrap_batch_keeps_order_and_moves_to_latest(env: Env) -> None:
    a = env.encrypt("backup-share", b"alpha", b"x")
    env.registry.rotate_sync("backup-share")
    items: list[DecryptItem | VaultError] = [DecryptItem(a, b"x"), DecryptItem(a, b"y")]
    results = asyncio.run(env.transit.rewrap("backup-share", items))
    assert isinstance(results[0], Encrypted)
    assert results[0].key_version == 2
    assert results[0].ciphertext.startswith("vault:v2:")
    assert_invalid(results[1])
    assert env.decrypt("backup-share", results[0].ciphertext, b"x") == b"alpha"


# -- nonces -------------------------------------------------------------------------------


def test_wrap_nonces_are_random_and_never_repeat(env: Env) -> None:
    nonces = [blob_of(env.encrypt("backup-share", b"x"))[1 : 1 + NONCE_BYTES] for _ in range(2000)]
    assert len(set(nonces)) == len(nonces)
    assert all(len(n) == NONCE_BYTES for n in nonces)


class _IvChoosingOps(FakeOps):
    """A module that ignores the IV it is offered and uses its own (AWS CloudHSM, FIPS-mode
    modules): what the vault stores must be what the module reports."""

    def encrypt_gcm(
        self, key_id: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        own = os.urandom(NONCE_BYTES)
        assert own != iv
        return super().encrypt_gcm(key_id, own, plaintext, aad)


def test_an_iv_chosen_by_the_module_round_trips(tmp_path: Path) -> None:
    made = make_env(tmp_path / "vault.db")
    made.hsm.ops = _IvChoosingOps()
    made.registry.create_sync("backup-share", "aes256-gcm96")
    ct = made.encrypt("backup-share", b"share", b"ad")
    assert made.decrypt("backup-share", ct, b"ad") == b"share"


def test_no_database_state_takes_part_in_a_wrap_nonce(tmp_path: Path) -> None:
    """A restored copy of the database (same rows, same ids) still draws fresh nonces."""
    first = make_env(tmp_path / "a.db")
    first.registry.create_sync("backup-share", "aes256-gcm96")
    first.engine.dispose()  # a consistent file to copy (the WAL checkpointed)
    copy = tmp_path / "b.db"
    copy.write_bytes((tmp_path / "a.db").read_bytes())
    second = make_env(copy)
    second.hsm.ops = first.hsm.ops  # the same HSM key behind both
    nonces = {
        blob_of(env.encrypt("backup-share", b"x"))[1 : 1 + NONCE_BYTES]
        for env in (first, second)
        for _ in range(500)
    }
    assert len(nonces) == 1000


def test_a_reused_row_id_never_repeats_a_nonce(tmp_path: Path) -> None:
    """Deleting the newest row lets SQLite hand its id out again (no AUTOINCREMENT): a
    process that starts after that, over the same HSM key, still draws fresh nonces."""
    first = make_env(tmp_path / "vault.db")
    first.registry.create_sync("backup-share", "aes256-gcm96")
    seen = {blob_of(first.encrypt("backup-share", b"x"))[1 : 1 + NONCE_BYTES] for _ in range(500)}
    versions = tables.key_versions
    with first.engine.begin() as conn:
        row = conn.execute(select(versions)).mappings().one()
        conn.execute(delete(versions))
        conn.execute(insert(versions).values(**row))  # the same row, the same id, again
    first.engine.dispose()
    second = make_env(tmp_path / "vault.db")
    second.hsm.ops = first.hsm.ops
    for _ in range(500):
        nonce = blob_of(second.encrypt("backup-share", b"x"))[1 : 1 + NONCE_BYTES]
        assert nonce not in seen
        seen.add(nonce)


def test_the_schema_keeps_no_nonce_state(tmp_path: Path) -> None:
    """Migration 0002 drops ``nonce_prefixes``; existing keys get their type's purpose."""
    from vault.store import make_engine
    from vault.store.migrations import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO keys VALUES ('old-rsa', 'rsa-3072', 1, 1, 0, 0, 0, 0.0, 0.0),"
                " ('old-aes', 'aes256-gcm96', 1, 1, 0, 0, 0, 0.0, 0.0)"
            )
        )
        conn.execute(text("INSERT INTO nonce_prefixes (created_at, owner) VALUES (0.0, 'w')"))
    upgrade(engine)
    assert "nonce_prefixes" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        purposes = dict(conn.execute(text("SELECT name, purpose FROM keys")).all())
    assert purposes == {"old-rsa": "signing", "old-aes": "encryption"}
    engine.dispose()


def test_a_tampered_data_key_and_a_tampered_payload_cost_the_same_hsm_work(env: Env) -> None:
    """Both unwrap (one job), then check the key with a known-good ciphertext (one more)."""
    ct = env.encrypt("backup-share", b"share", b"ad")
    blob = blob_of(ct)
    costs = []
    for index in (1 + NONCE_BYTES + 3, HEADER_BYTES + 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        jobs, calls = env.hsm.jobs, dict(env.hsm.ops.calls)
        assert_invalid(env.decrypt("backup-share", with_blob(ct, bytes(tampered)), b"ad"))
        spent = {k: v - calls.get(k, 0) for k, v in env.hsm.ops.calls.items()}
        costs.append((env.hsm.jobs - jobs, {k: v for k, v in spent.items() if v}))
    assert costs[0] == costs[1] == (2, {"decrypt_gcm": 1, "key_works": 1})


def test_a_failing_device_is_not_reported_as_a_bad_ciphertext(env: Env) -> None:
    class Failing(FakeOps):
        def key_works(self, key_id: bytes, oaep_hash: str | None = None) -> bool:
            return False

    ct = env.encrypt("backup-share", b"share")
    failing = Failing()
    failing.store = env.hsm.ops.store
    env.hsm.ops = failing
    tampered = bytearray(blob_of(ct))
    tampered[-1] ^= 1
    result = env.decrypt("backup-share", with_blob(ct, bytes(tampered)))
    assert isinstance(result, HsmUnavailable)
    assert env.decrypt("backup-share", ct) == b"share"


# -- parsing ------------------------------------------------------------------------------

_GOOD_BLOB = bytes([FORMAT_V1]) + bytes(HEADER_BYTES - 1 + TAG_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


MALFORMED = {
    "empty": "",
    "no version": "vault:",
    "bare v": "vault:v",
    "version 0": f"vault:v0:{_b64(_GOOD_BLOB)}",
    "leading zero": f"vault:v01:{_b64(_GOOD_BLOB)}",
    "letter version": f"vault:vX:{_b64(_GOOD_BLOB)}",
    "negative version": f"vault:v-1:{_b64(_GOOD_BLOB)}",
    "plus version": f"vault:v+1:{_b64(_GOOD_BLOB)}",
    "ten digit version": f"vault:v1234567890:{_b64(_GOOD_BLOB)}",
    "superscript version": f"vault:v\u00b9:{_b64(_GOOD_BLOB)}",
    "no second colon": "vault:v1",
    "missing base64": "vault:v1:",
    "bad base64": "vault:v1:!!!!",
    "base64 without padding": f"vault:v1:{_b64(_GOOD_BLOB).rstrip('=')}",
    "base64 with newline": f"vault:v1:{_b64(_GOOD_BLOB)[:8]}\n{_b64(_GOOD_BLOB)[8:]}",
    "short blob": f"vault:v1:{_b64(_GOOD_BLOB[:-1])}",
    "wrong format byte": f"vault:v1:{_b64(bytes([0x02]) + _GOOD_BLOB[1:])}",
    "format byte zero": f"vault:v1:{_b64(bytes([0x00]) + _GOOD_BLOB[1:])}",
    "other prefix": f"vault:w1:{_b64(_GOOD_BLOB)}",
    "upper case prefix": f"VAULT:v1:{_b64(_GOOD_BLOB)}",
    "leading space": f" vault:v1:{_b64(_GOOD_BLOB)}",
}


def test_parse_accepts_the_well_formed_minimum() -> None:
    parsed = parse(f"vault:v12:{_b64(_GOOD_BLOB)}")
    assert parsed.version == 12
    assert len(parsed.nonce) == NONCE_BYTES
    assert len(parsed.wrapped_dek) == WRAPPED_DEK_BYTES
    assert len(parsed.payload) == TAG_BYTES


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_rejects_malformed_with_the_one_message(text: str) -> None:
    with pytest.raises(InvalidCiphertext) as caught:
        parse(text)
    assert str(caught.value) == ONE_MESSAGE


def test_parse_rejects_non_ascii_digits() -> None:
    with pytest.raises(InvalidCiphertext):
        parse(f"vault:v\u0661:{_b64(_GOOD_BLOB)}")


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_decrypt_reports_malformed_as_an_item_error(env: Env, text: str) -> None:
    assert_invalid(env.decrypt("backup-share", text))


# -- context binding ----------------------------------------------------------------------


def test_context_differs_for_names_and_versions() -> None:
    contexts = {context(n, v) for n in ("a", "b", "ab", "backup-share") for v in (1, 2, 10)}
    assert len(contexts) == 12


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("ab", 1), ("a", 1)),
        (("a1", 1), ("a", 11)),
        (("a", 0x6201), ("ab", 1)),
        (("key", 1), ("key\x00", 1)),
    ],
)
def test_context_cannot_collide_by_concatenation(
    one: tuple[str, int], two: tuple[str, int]
) -> None:
    c1, c2 = context(*one), context(*two)
    assert c1 != c2
    # The payload's associated data is context + caller data: neither may be a prefix.
    assert not c1.startswith(c2)
    assert not c2.startswith(c1)


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
)
versions = st.integers(min_value=1, max_value=2**31 - 1)


@given(one=st.tuples(names, versions), two=st.tuples(names, versions))
def test_context_is_prefix_free(one: tuple[str, int], two: tuple[str, int]) -> None:
    if one != two:
        assert not context(*one).startswith(context(*two))


def test_ciphertext_of_one_key_does_not_decrypt_under_another(env: Env) -> None:
    env.registry.create_sync("other-key", "aes256-gcm96")
    ct = env.encrypt("backup-share", b"share", b"ad")
    assert_invalid(env.decrypt("other-key", ct, b"ad"))
    assert env.decrypt("backup-share", ct, b"ad") == b"share"


def test_decrypt_with_other_associated_data_fails(env: Env) -> None:
    ct = env.encrypt("backup-share", b"share", b"user-1")
    assert_invalid(env.decrypt("backup-share", ct, b"user-2"))
    assert_invalid(env.decrypt("backup-share", ct, b""))
    bare = env.encrypt("backup-share", b"share")
    assert_invalid(env.decrypt("backup-share", bare, b"user-1"))


def test_relabelled_version_does_not_decrypt(env: Env) -> None:
    env.registry.rotate_sync("backup-share")
    ct = env.encrypt("backup-share", b"share", version=1)
    assert ct.startswith("vault:v1:")
    assert_invalid(env.decrypt("backup-share", ct.replace("vault:v1:", "vault:v2:")))
    assert env.decrypt("backup-share", ct) == b"share"


def test_wrapped_key_is_bound_to_its_own_payload(env: Env) -> None:
    """Splicing the header of one ciphertext onto the payload of another fails."""
    one = blob_of(env.encrypt("backup-share", b"payload one"))
    two = blob_of(env.encrypt("backup-share", b"payload two"))
    spliced = one[:HEADER_BYTES] + two[HEADER_BYTES:]
    assert_invalid(env.decrypt("backup-share", with_blob("vault:v1:x", spliced)))


# -- key versions -------------------------------------------------------------------------


@pytest.fixture
def three_versions(env: Env) -> Env:
    env.registry.rotate_sync("backup-share")
    env.registry.rotate_sync("backup-share")
    return env


@pytest.mark.parametrize(("requested", "expected"), [(None, 3), (0, 3), (3, 3), (2, 2), (1, 1)])
def test_version_to_use_picks_the_version(
    three_versions: Env, requested: int | None, expected: int
) -> None:
    key = three_versions.registry.get_sync("backup-share")
    assert key.version_to_use(requested).version == expected


@pytest.mark.parametrize("requested", [4, 100, -1])
def test_version_to_use_refuses_versions_that_do_not_exist(
    three_versions: Env, requested: int
) -> None:
    key = three_versions.registry.get_sync("backup-share")
    with pytest.raises(KeyVersionUnavailable, match="does not exist"):
        key.version_to_use(requested)


def test_version_to_use_refuses_below_min_encryption_version(three_versions: Env) -> None:
    three_versions.registry.configure_sync("backup-share", min_encryption_version=2)
    key = three_versions.registry.get_sync("backup-share")
    with pytest.raises(KeyVersionUnavailable, match="below min_encryption_version"):
        key.version_to_use(1)
    assert key.version_to_use(2).version == 2
    assert key.version_to_use(None).version == 3


def test_encrypt_below_min_encryption_version_is_an_item_error(three_versions: Env) -> None:
    three_versions.registry.configure_sync("backup-share", min_encryption_version=3)
    items: list[EncryptItem | VaultError] = [
        EncryptItem(b"a", b"", key_version=2),
        EncryptItem(b"b", b""),
    ]
    results = asyncio.run(three_versions.transit.encrypt("backup-share", items))
    assert isinstance(results[0], BadRequest)
    assert isinstance(results[1], Encrypted)
    assert results[1].key_version == 3


def test_version_to_use_refuses_below_min_decryption_version(three_versions: Env) -> None:
    three_versions.registry.configure_sync("backup-share", min_decryption_version=2)
    key = three_versions.registry.get_sync("backup-share")
    assert key.min_encryption_version == 0
    with pytest.raises(KeyVersionUnavailable, match="below min_decryption_version"):
        key.version_to_use(1)


def test_version_to_check_below_min_decryption_version(three_versions: Env) -> None:
    env = three_versions
    old = env.encrypt("backup-share", b"old", version=1)
    env.registry.configure_sync("backup-share", min_decryption_version=2)
    key = env.registry.get_sync("backup-share")
    with pytest.raises(KeyVersionUnavailable, match="too old"):
        key.version_to_check(1)
    assert key.version_to_check(2).version == 2
    assert key.version_to_check(3).version == 3
    for missing in (0, 4):
        with pytest.raises(KeyVersionUnavailable, match="does not exist"):
            key.version_to_check(missing)
    refused = env.decrypt("backup-share", old)
    assert isinstance(refused, KeyVersionUnavailable)
    assert "too old" in str(refused)
    # Lowering the minimum again brings the old version back (nothing was destroyed); that
    # needs two officers' approval, which tests/unit/test_approvals.py covers.
    env.registry.configure_sync("backup-share", min_decryption_version=1, by=UNATTENDED)
    assert env.decrypt("backup-share", old) == b"old"


def test_rotation_keeps_old_ciphertexts_readable(env: Env) -> None:
    v1 = env.encrypt("backup-share", b"before")
    env.registry.rotate_sync("backup-share")
    v2 = env.encrypt("backup-share", b"after")
    assert v2.startswith("vault:v2:")
    assert env.decrypt("backup-share", v1) == b"before"
    assert env.decrypt("backup-share", v2) == b"after"


# -- data keys, key types, random ---------------------------------------------------------


@pytest.mark.parametrize("bits", [128, 256, 512])
def test_datakey_is_sealed_under_the_key(env: Env, bits: int) -> None:
    made = asyncio.run(env.transit.datakey("backup-share", bits, b"ctx"))
    assert len(made.plaintext) == bits // 8
    assert made.key_version == 1
    assert env.decrypt("backup-share", made.ciphertext, b"ctx") == made.plaintext
    assert_invalid(env.decrypt("backup-share", made.ciphertext, b""))


@pytest.mark.parametrize("bits", [0, 64, 255, 1024])
def test_datakey_refuses_other_sizes(env: Env, bits: int) -> None:
    with pytest.raises(BadRequest, match="bit length"):
        asyncio.run(env.transit.datakey("backup-share", bits, b""))


def test_data_keys_differ_from_each_other(env: Env) -> None:
    one = asyncio.run(env.transit.datakey("backup-share", 256, b""))
    two = asyncio.run(env.transit.datakey("backup-share", 256, b""))
    assert one.plaintext != two.plaintext
    assert len(one.plaintext) == DEK_BYTES


def test_keys_that_do_not_encrypt_refuse(env: Env) -> None:
    env.registry.create_sync("mac-key", "hmac")
    with pytest.raises(BadRequest, match="does not support encryption"):
        asyncio.run(env.transit.encrypt("mac-key", [EncryptItem(b"x", b"")]))
    with pytest.raises(BadRequest, match="does not support decryption"):
        asyncio.run(env.transit.decrypt("mac-key", [DecryptItem("vault:v1:AAAA", b"")]))
    with pytest.raises(BadRequest, match="does not support data keys"):
        asyncio.run(env.transit.datakey("mac-key", 256, b""))


@pytest.mark.parametrize("length", [0, -1, 131073])
def test_random_refuses_out_of_range(env: Env, length: int) -> None:
    with pytest.raises(BadRequest):
        asyncio.run(env.transit.random(length))


def test_random_returns_the_length_asked(env: Env) -> None:
    assert len(asyncio.run(env.transit.random(1))) == 1
    assert len(asyncio.run(env.transit.random(131072))) == 131072


# -- properties ---------------------------------------------------------------------------

_PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(plaintext=st.binary(max_size=512), ad=st.binary(max_size=64))
def test_round_trip_any_bytes(shared: Env, plaintext: bytes, ad: bytes) -> None:
    ct = shared.encrypt("prop-key", plaintext, ad)
    assert shared.decrypt("prop-key", ct, ad) == plaintext


@_PROPERTY
@given(plaintext=st.binary(max_size=64), data=st.data())
def test_any_single_byte_change_fails(shared: Env, plaintext: bytes, data: st.DataObject) -> None:
    ct = shared.encrypt("prop-key", plaintext, b"ad")
    blob = bytearray(blob_of(ct))
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="index")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="xor")
    blob[index] ^= flip
    assert_invalid(shared.decrypt("prop-key", with_blob(ct, bytes(blob)), b"ad"))


@_PROPERTY
@given(plaintext=st.binary(min_size=1, max_size=64), data=st.data())
def test_truncation_or_extension_fails(shared: Env, plaintext: bytes, data: st.DataObject) -> None:
    ct = shared.encrypt("prop-key", plaintext, b"")
    blob = blob_of(ct)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="cut")
    extra = data.draw(st.binary(min_size=1, max_size=16), label="extra")
    assert_invalid(shared.decrypt("prop-key", with_blob(ct, blob[:cut])))
    assert_invalid(shared.decrypt("prop-key", with_blob(ct, blob + extra)))


# -- format 0x02: batches -----------------------------------------------------------------

V2_ITEM_NONCE = slice(HEADER_BYTES, HEADER_V2_BYTES)
V2_WRAP = slice(1, HEADER_BYTES)  # wrap IV and wrapped data key


def encrypt_batch(
    env: Env, name: str, plaintexts: list[bytes], ad: bytes = b"", versions: list[int] | None = None
) -> list[str]:
    items = [
        EncryptItem(p, ad, versions[i] if versions else None) for i, p in enumerate(plaintexts)
    ]
    results = asyncio.run(env.transit.encrypt(name, items))
    assert all(isinstance(r, Encrypted) for r in results), results
    return [r.ciphertext for r in results if isinstance(r, Encrypted)]


def decrypt_batch(env: Env, name: str, cts: list[str], ad: bytes = b"") -> list[bytes | VaultError]:
    return asyncio.run(env.transit.decrypt(name, [DecryptItem(c, ad) for c in cts]))


def spent(env: Env, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in env.hsm.ops.calls.items() if v - before.get(k, 0)}


def test_a_batch_round_trips_in_format_2(env: Env) -> None:
    plaintexts = [f"share {i}".encode() for i in range(20)] + [b""]
    cts = encrypt_batch(env, "backup-share", plaintexts, b"user-42")
    blobs = [blob_of(c) for c in cts]
    assert all(c.startswith("vault:v1:") for c in cts)
    assert {b[0] for b in blobs} == {FORMAT_V2}
    assert [len(b) for b in blobs] == [HEADER_V2_BYTES + len(p) + TAG_BYTES for p in plaintexts]
    assert len({b[V2_WRAP] for b in blobs}) == 1  # one data key, wrapped once
    assert len({b[V2_ITEM_NONCE] for b in blobs}) == len(blobs)  # a nonce per item
    assert all(p not in b for p, b in zip(plaintexts[:-1], blobs[:-1], strict=True))
    assert decrypt_batch(env, "backup-share", cts, b"user-42") == plaintexts


def test_each_item_of_a_batch_decrypts_alone(env: Env) -> None:
    plaintexts = [os.urandom(40) for _ in range(5)]
    cts = encrypt_batch(env, "backup-share", plaintexts, b"ad")
    for ct, plaintext in zip(reversed(cts), reversed(plaintexts), strict=True):
        assert env.decrypt("backup-share", ct, b"ad") == plaintext


def test_a_batch_makes_one_wrap_and_its_decryption_one_unwrap(env: Env) -> None:
    before = dict(env.hsm.ops.calls)
    cts = encrypt_batch(env, "backup-share", [bytes([i]) * 100 for i in range(100)])
    assert spent(env, before) == {"encrypt_gcm": 1}
    before = dict(env.hsm.ops.calls)
    assert decrypt_batch(env, "backup-share", cts) == [bytes([i]) * 100 for i in range(100)]
    assert spent(env, before) == {"decrypt_gcm": 1}


def test_singles_and_one_item_batches_stay_format_1(env: Env) -> None:
    assert blob_of(env.encrypt("backup-share", b"one"))[0] == FORMAT_V1
    items: list[EncryptItem | VaultError] = [BadRequest("bad"), EncryptItem(b"only", b"")]
    [error, made] = asyncio.run(env.transit.encrypt("backup-share", items))
    assert isinstance(error, BadRequest)
    assert isinstance(made, Encrypted)
    assert blob_of(made.ciphertext)[0] == FORMAT_V1
    datakey = asyncio.run(env.transit.datakey("backup-share", 256, b""))
    assert blob_of(datakey.ciphertext)[0] == FORMAT_V1


def test_mixed_versions_get_one_data_key_per_version(env: Env) -> None:
    env.registry.rotate_sync("backup-share")
    env.registry.rotate_sync("backup-share")
    versions = [1, 3, 2, 3, 1, 3, 2]
    plaintexts = [f"item {i}".encode() for i in range(len(versions))]
    before = dict(env.hsm.ops.calls)
    cts = encrypt_batch(env, "backup-share", plaintexts, b"ad", versions)
    assert spent(env, before) == {"encrypt_gcm": 3}
    assert [c.split(":")[1] for c in cts] == [f"v{v}" for v in versions]
    wraps = {
        v: {blob_of(c)[V2_WRAP] for c, w in zip(cts, versions, strict=True) if w == v}
        for v in (1, 2, 3)
    }
    assert all(len(w) == 1 for w in wraps.values())
    assert len(set().union(*wraps.values())) == 3
    before = dict(env.hsm.ops.calls)
    assert decrypt_batch(env, "backup-share", cts, b"ad") == plaintexts
    assert spent(env, before) == {"decrypt_gcm": 3}


def test_a_data_key_seals_at_most_its_bound_of_items(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envelope, "MAX_ITEMS_PER_DATA_KEY", 3)
    before = dict(env.hsm.ops.calls)
    cts = encrypt_batch(env, "backup-share", [bytes([i]) for i in range(7)])
    assert spent(env, before) == {"encrypt_gcm": 3}  # ceil(7 / 3) data keys
    keys = Counter(blob_of(c)[V2_WRAP] for c in cts)
    assert sorted(keys.values()) == [1, 3, 3]
    assert decrypt_batch(env, "backup-share", cts) == [bytes([i]) for i in range(7)]


def test_a_format_2_blob_made_from_the_spec_decrypts(env: Env) -> None:
    """The layout of docs/envelope.md, built here by hand from the HSM key: it decrypts."""
    version = env.registry.get_sync("backup-share").versions[1]
    kek = env.hsm.ops.store[version.object_id()].secret
    dek, wrap_iv, item_nonce = os.urandom(32), os.urandom(12), os.urandom(12)
    name = b"backup-share"
    ctx = (
        b"hsm-vault/envelope/v2\x00" + len(name).to_bytes(2, "big") + name + (1).to_bytes(4, "big")
    )
    wrapped = AESGCM(kek).encrypt(wrap_iv, dek, ctx)
    payload = AESGCM(dek).encrypt(item_nonce, b"by hand", ctx + b"ad")
    blob = bytes([0x02]) + wrap_iv + wrapped + item_nonce + payload
    ct = "vault:v1:" + base64.b64encode(blob).decode()
    assert env.decrypt("backup-share", ct, b"ad") == b"by hand"
    assert context_v2("backup-share", 1) == ctx
    # The version 1 layout, by hand as well: the format this change keeps byte for byte.
    ctx1 = ctx.replace(b"/v2\x00", b"/v1\x00")
    wrapped1 = AESGCM(kek).encrypt(wrap_iv, dek, ctx1)
    payload1 = AESGCM(dek).encrypt(bytes(12), b"old", ctx1 + b"ad")
    old = "vault:v1:" + base64.b64encode(b"\x01" + wrap_iv + wrapped1 + payload1).decode()
    assert env.decrypt("backup-share", old, b"ad") == b"old"


V2_FIELDS = {
    "format byte to 0x01": (0, 0x01 ^ 0x02),
    "wrap iv": (1, 0x01),
    "wrapped data key": (1 + NONCE_BYTES + 7, 0x80),
    "wrapped data key tag": (HEADER_BYTES - 1, 0x01),
    "item nonce": (HEADER_BYTES + 4, 0x01),
    "payload": (HEADER_V2_BYTES + 2, 0x01),
    "payload tag": (-1, 0x01),
}


@pytest.mark.parametrize(("index", "flip"), V2_FIELDS.values(), ids=V2_FIELDS.keys())
def test_tampering_with_any_field_of_a_format_2_item_fails(env: Env, index: int, flip: int) -> None:
    share = b"a share of forty bytes, more or less..."
    cts = encrypt_batch(env, "backup-share", [share] * 3, b"ad")
    blob = bytearray(blob_of(cts[1]))
    blob[index] ^= flip
    tampered = with_blob(cts[1], bytes(blob))
    results = decrypt_batch(env, "backup-share", [cts[0], tampered, cts[2]], b"ad")
    assert results[0] == results[2] == share
    assert_invalid(results[1])


def test_other_associated_data_fails_for_a_format_2_item(env: Env) -> None:
    cts = encrypt_batch(env, "backup-share", [b"x", b"y"], b"user-1")
    assert_invalid(env.decrypt("backup-share", cts[0], b"user-2"))
    assert_invalid(env.decrypt("backup-share", cts[1], b""))


def test_a_format_1_blob_relabelled_2_does_not_decrypt(env: Env) -> None:
    ct = env.encrypt("backup-share", b"long enough to parse as a format-2 item", b"ad")
    blob = bytearray(blob_of(ct))
    blob[0] = FORMAT_V2
    assert_invalid(env.decrypt("backup-share", with_blob(ct, bytes(blob)), b"ad"))


def test_a_tampered_data_key_and_a_tampered_payload_cost_the_same_in_a_batch(env: Env) -> None:
    cts = encrypt_batch(env, "backup-share", [b"one", b"two", b"three"], b"ad")
    blob = blob_of(cts[2])
    costs = []
    for index in (1 + NONCE_BYTES + 3, HEADER_V2_BYTES + 1):
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        jobs, before = env.hsm.jobs, dict(env.hsm.ops.calls)
        results = decrypt_batch(
            env, "backup-share", [with_blob(cts[2], bytes(tampered)), cts[0]], b"ad"
        )
        assert_invalid(results[0])
        assert results[1] == b"one"
        costs.append((env.hsm.jobs - jobs, spent(env, before)))
    # The tampered data key is its own group: one unwrap for it, one for the good key.
    assert costs[0] == (2, {"decrypt_gcm": 2, "key_works": 1})
    assert costs[1] == (2, {"decrypt_gcm": 1, "key_works": 1})


def test_every_item_of_a_data_key_that_did_not_unwrap_fails_alone(env: Env) -> None:
    one = encrypt_batch(env, "backup-share", [b"a1", b"a2", b"a3"])
    two = encrypt_batch(env, "backup-share", [b"b1", b"b2"])
    tampered = []
    for ct in one:
        blob = bytearray(blob_of(ct))
        blob[1 + NONCE_BYTES] ^= 0x01  # the same change to each: they still share a key
        tampered.append(with_blob(ct, bytes(blob)))
    before = dict(env.hsm.ops.calls)
    mixed = [tampered[0], two[0], tampered[1], two[1], tampered[2]]
    results = decrypt_batch(env, "backup-share", mixed)
    assert spent(env, before) == {"decrypt_gcm": 2, "key_works": 1}
    assert results[1] == b"b1"
    assert results[3] == b"b2"
    for i in (0, 2, 4):
        assert_invalid(results[i])


def test_a_failing_device_is_not_reported_as_a_bad_batch_item(env: Env) -> None:
    class Failing(FakeOps):
        def key_works(self, key_id: bytes, oaep_hash: str | None = None) -> bool:
            return False

    cts = encrypt_batch(env, "backup-share", [b"x", b"y"])
    failing = Failing()
    failing.store = env.hsm.ops.store
    env.hsm.ops = failing
    blob = bytearray(blob_of(cts[0]))
    blob[-1] ^= 1
    results = decrypt_batch(env, "backup-share", [with_blob(cts[0], bytes(blob)), cts[1]])
    assert isinstance(results[0], HsmUnavailable)
    assert results[1] == b"y"


def test_format_1_and_2_items_decrypt_in_one_batch(env: Env) -> None:
    single = env.encrypt("backup-share", b"single", b"ad")
    batch = encrypt_batch(env, "backup-share", [b"b1", b"b2"], b"ad")
    assert decrypt_batch(env, "backup-share", [batch[1], single, batch[0]], b"ad") == [
        b"b2",
        b"single",
        b"b1",
    ]


def test_rewrap_of_format_2_items(env: Env) -> None:
    cts = encrypt_batch(env, "backup-share", [b"r1", b"r2", b"r3"], b"ad")
    env.registry.rotate_sync("backup-share")
    before = dict(env.hsm.ops.calls)
    items: list[DecryptItem | VaultError] = [DecryptItem(c, b"ad") for c in cts]
    results = asyncio.run(env.transit.rewrap("backup-share", items))
    assert spent(env, before) == {"decrypt_gcm": 1, "encrypt_gcm": 1}
    again = [r.ciphertext for r in results if isinstance(r, Encrypted)]
    assert len(again) == 3
    assert all(c.startswith("vault:v2:") and blob_of(c)[0] == FORMAT_V2 for c in again)
    assert decrypt_batch(env, "backup-share", again, b"ad") == [b"r1", b"r2", b"r3"]
    [one] = asyncio.run(env.transit.rewrap("backup-share", [DecryptItem(cts[0], b"ad")]))
    assert isinstance(one, Encrypted)
    assert blob_of(one.ciphertext)[0] == FORMAT_V1
    assert env.decrypt("backup-share", one.ciphertext, b"ad") == b"r1"


def test_format_2_parse_needs_the_whole_header() -> None:
    short = bytes([FORMAT_V2]) + bytes(HEADER_V2_BYTES - 1 + TAG_BYTES - 1)
    with pytest.raises(InvalidCiphertext):
        parse("vault:v1:" + _b64(short))
    parsed = parse("vault:v1:" + _b64(short + b"\x00"))
    assert parsed.format == FORMAT_V2
    assert parsed.payload == bytes(TAG_BYTES)


@_PROPERTY
@given(plaintext=st.binary(max_size=64), data=st.data())
def test_any_single_byte_change_of_a_format_2_item_fails(
    shared: Env, plaintext: bytes, data: st.DataObject
) -> None:
    cts = encrypt_batch(shared, "prop-key", [plaintext, b"sibling"], b"ad")
    blob = bytearray(blob_of(cts[0]))
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="index")
    flip = data.draw(st.integers(min_value=1, max_value=255), label="xor")
    blob[index] ^= flip
    results = decrypt_batch(shared, "prop-key", [with_blob(cts[0], bytes(blob)), cts[1]], b"ad")
    assert_invalid(results[0])
    assert results[1] == b"sibling"
