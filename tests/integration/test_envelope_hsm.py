"""Envelope properties on the real SoftHSM2 token (hypothesis drives the inputs)."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.key_doubles import IvWritingKey, token_calls, wrapped_keys
from vault.envelope import FORMAT_V2, HEADER_BYTES, HEADER_V2_BYTES, NONCE_BYTES, EncryptItem
from vault.errors import InvalidCiphertext, KeyVersionUnavailable, VaultError
from vault.transit import DecryptItem

pytestmark = pytest.mark.hsm
_hsm_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _encrypt(rt, name: str, plaintext: bytes, ad: bytes, version: int | None = None) -> str:  # type: ignore[no-untyped-def]
    [result] = asyncio.run(rt.transit.encrypt(name, [EncryptItem(plaintext, ad)], version))
    assert not isinstance(result, VaultError)
    return str(result.ciphertext)


def _decrypt(rt, name: str, ciphertext: str, ad: bytes) -> bytes | VaultError:  # type: ignore[no-untyped-def]
    [result] = asyncio.run(rt.transit.decrypt(name, [DecryptItem(ciphertext, ad)]))
    return result  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def key(runtime) -> str:  # type: ignore[no-untyped-def]
    name = f"props-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    return name


@_hsm_settings
@given(plaintext=st.binary(max_size=4096), ad=st.binary(max_size=256))
def test_roundtrip_any_bytes_any_associated_data(
    runtime, key: str, plaintext: bytes, ad: bytes
) -> None:  # type: ignore[no-untyped-def]
    ct = _encrypt(runtime, key, plaintext, ad)
    assert _decrypt(runtime, key, ct, ad) == plaintext


@_hsm_settings
@given(ad=st.binary(min_size=1, max_size=64), other=st.binary(max_size=64))
def test_other_associated_data_fails(runtime, key: str, ad: bytes, other: bytes) -> None:  # type: ignore[no-untyped-def]
    if ad == other:
        return
    ct = _encrypt(runtime, key, b"share", ad)
    assert isinstance(_decrypt(runtime, key, ct, other), InvalidCiphertext)


def test_every_single_byte_change_fails_with_one_message(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    ad = b"user-1|pk"
    ct = _encrypt(runtime, key, b"the third share of a wallet key", ad)
    prefix, _, body = ct.rpartition(":")
    raw = bytearray(base64.b64decode(body))
    messages = set()
    for i in range(len(raw)):
        for flip in (0x01, 0x80):
            tampered = bytearray(raw)
            tampered[i] ^= flip
            result = _decrypt(
                runtime, key, f"{prefix}:{base64.b64encode(bytes(tampered)).decode()}", ad
            )
            assert isinstance(result, InvalidCiphertext), (i, flip)
            messages.add(str(result))
    # Truncation and extension fail alike.
    for variant in (bytes(raw[:-1]), bytes(raw) + b"\x00", bytes(raw[:20])):
        result = _decrypt(runtime, key, f"{prefix}:{base64.b64encode(variant).decode()}", ad)
        messages.add(str(result))
    assert len(messages) == 1
    # A version the key does not have is named as such (the key's versions are no secret).
    other_version = _decrypt(runtime, key, ct.replace("vault:v1:", "vault:v2:", 1), ad)
    assert isinstance(other_version, KeyVersionUnavailable)


def test_another_key_cannot_open_it(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    other = f"props-other-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(other, "aes256-gcm96")
    ct = _encrypt(runtime, key, b"secret", b"")
    assert isinstance(_decrypt(runtime, other, ct, b""), InvalidCiphertext)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rotations=st.integers(min_value=1, max_value=4), floor=st.integers(min_value=1, max_value=5))
def test_rotation_never_strands_data_above_min_decryption_version(
    runtime, rotations: int, floor: int
) -> None:  # type: ignore[no-untyped-def]
    name = f"rot-{uuid.uuid4().hex[:10]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    made = {1: _encrypt(runtime, name, b"v1", b"ad")}
    for n in range(2, rotations + 2):
        runtime.registry.rotate_sync(name)
        made[n] = _encrypt(runtime, name, f"v{n}".encode(), b"ad")
    floor = min(floor, rotations + 1)
    runtime.registry.configure_sync(name, min_decryption_version=floor)
    runtime.registry.invalidate(name)
    for version, ct in made.items():
        result = _decrypt(runtime, name, ct, b"ad")
        if version >= floor:
            assert result == f"v{version}".encode()
        else:
            assert isinstance(result, KeyVersionUnavailable)


def test_a_tampered_data_key_and_a_tampered_payload_cost_the_same_hsm_work(
    runtime, key: str
) -> None:  # type: ignore[no-untyped-def]
    """Which part of a ciphertext was changed shows neither in the answer nor in the token
    calls it costs: both unwrap, then check the key with a known-good ciphertext."""
    ct = _encrypt(runtime, key, b"the third share", b"ad")
    prefix, _, body = ct.rpartition(":")
    raw = base64.b64decode(body)

    def tampered(index: int) -> str:
        changed = bytearray(raw)
        changed[index] ^= 0x01
        return f"{prefix}:{base64.b64encode(bytes(changed)).decode()}"

    _decrypt(runtime, key, tampered(-1), b"ad")  # the per-process canary exists from here on
    costs = {}
    for part, index in (
        ("nonce", 1),
        ("wrapped data key", 1 + NONCE_BYTES + 5),
        ("payload", HEADER_BYTES + 3),
        ("tag", len(raw) - 1),
    ):
        with token_calls(runtime) as calls:
            result = _decrypt(runtime, key, tampered(index), b"ad")
        assert isinstance(result, InvalidCiphertext), part
        costs[part] = dict(calls)
    assert all(cost == costs["payload"] for cost in costs.values()), costs
    assert costs["payload"] == {"decrypt": 2}
    with token_calls(runtime) as calls:
        assert _decrypt(runtime, key, ct, b"ad") == b"the third share"
    assert dict(calls) == {"decrypt": 1}  # a good ciphertext: one call, no check


def test_a_module_that_writes_its_own_iv_round_trips(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    """On a module that picks the GCM IV itself, what is stored is the IV it used: the
    ciphertexts decrypt (on the real token), and their nonces are the module's."""
    chosen: list[bytes] = []
    with wrapped_keys(runtime, lambda k: IvWritingKey(k, chosen)):
        made = [_encrypt(runtime, key, f"share {i}".encode(), b"ad") for i in range(20)]
        [datakey] = [run_datakey(runtime, key)]
    assert len(chosen) == 21
    stored = [base64.b64decode(ct.rpartition(":")[2])[1 : 1 + NONCE_BYTES] for ct in made]
    assert stored == chosen[:20]
    for i, ct in enumerate(made):
        assert _decrypt(runtime, key, ct, b"ad") == f"share {i}".encode()
    assert _decrypt(runtime, key, datakey.ciphertext, b"") == datakey.plaintext


def run_datakey(runtime, key: str):  # type: ignore[no-untyped-def]
    return asyncio.run(runtime.transit.datakey(key, 256, b""))


# -- format 0x02: batches on the real token ------------------------------------------------


def _encrypt_batch(rt, name: str, plaintexts: list[bytes], ad: bytes, versions=None) -> list[str]:  # type: ignore[no-untyped-def]
    items = [
        EncryptItem(p, ad, versions[i] if versions else None) for i, p in enumerate(plaintexts)
    ]
    results = asyncio.run(rt.transit.encrypt(name, items))
    assert not any(isinstance(r, VaultError) for r in results), results
    return [str(r.ciphertext) for r in results]


def _decrypt_batch(rt, name: str, cts: list[str], ad: bytes) -> list[bytes | VaultError]:  # type: ignore[no-untyped-def]
    return asyncio.run(rt.transit.decrypt(name, [DecryptItem(c, ad) for c in cts]))  # type: ignore[no-any-return]


def _blob(ct: str) -> bytes:
    return base64.b64decode(ct.rpartition(":")[2])


def _with_blob(ct: str, blob: bytes) -> str:
    return f"{ct.rpartition(':')[0]}:{base64.b64encode(blob).decode()}"


def test_a_batch_is_one_wrap_and_one_unwrap_on_the_token(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    plaintexts = [f"share {i}".encode() * 10 for i in range(100)]
    with token_calls(runtime) as calls:
        cts = _encrypt_batch(runtime, key, plaintexts, b"user-7")
    assert dict(calls) == {"encrypt": 1}
    assert {_blob(c)[0] for c in cts} == {FORMAT_V2}
    assert len({_blob(c)[1:HEADER_BYTES] for c in cts}) == 1
    assert len({_blob(c)[HEADER_BYTES:HEADER_V2_BYTES] for c in cts}) == 100
    with token_calls(runtime) as calls:
        assert _decrypt_batch(runtime, key, cts, b"user-7") == plaintexts
    assert dict(calls) == {"decrypt": 1}
    for i in (0, 57, 99):  # each item alone
        assert _decrypt(runtime, key, cts[i], b"user-7") == plaintexts[i]


def test_mixed_versions_in_a_batch_on_the_token(runtime) -> None:  # type: ignore[no-untyped-def]
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    runtime.registry.rotate_sync(name)
    versions = [1, 2, 2, 1, 2]
    plaintexts = [bytes([i]) * 33 for i in range(5)]
    with token_calls(runtime) as calls:
        cts = _encrypt_batch(runtime, name, plaintexts, b"ad", versions)
    assert dict(calls) == {"encrypt": 2}
    assert [c.split(":")[1] for c in cts] == [f"v{v}" for v in versions]
    with token_calls(runtime) as calls:
        assert _decrypt_batch(runtime, name, cts, b"ad") == plaintexts
    assert dict(calls) == {"decrypt": 2}


def test_every_single_byte_change_of_a_batch_item_fails(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    ad = b"user-1|pk"
    cts = _encrypt_batch(runtime, key, [b"the third share of a wallet key", b"sibling"], ad)
    raw = _blob(cts[0])
    for i in range(len(raw)):
        tampered = bytearray(raw)
        tampered[i] ^= 0x01 if i else 0x03  # the format byte: 0x02 -> 0x01
        results = _decrypt_batch(runtime, key, [_with_blob(cts[0], bytes(tampered)), cts[1]], ad)
        assert isinstance(results[0], InvalidCiphertext), i
        assert str(results[0]) == "invalid ciphertext: message authentication failed"
        assert results[1] == b"sibling"
    assert isinstance(_decrypt(runtime, key, cts[0], b"other"), InvalidCiphertext)


def test_a_tampered_batch_item_costs_the_same_whichever_part(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    [ct, _] = _encrypt_batch(runtime, key, [b"the third share", b"another"], b"ad")
    raw = _blob(ct)

    def tampered(index: int) -> str:
        changed = bytearray(raw)
        changed[index] ^= 0x01
        return _with_blob(ct, bytes(changed))

    _decrypt(runtime, key, tampered(-1), b"ad")  # the per-process canary exists from here on
    costs = {}
    for part, index in (
        ("wrap iv", 1),
        ("wrapped data key", 1 + NONCE_BYTES + 5),
        ("item nonce", HEADER_BYTES + 2),
        ("payload", HEADER_V2_BYTES + 3),
        ("tag", len(raw) - 1),
    ):
        with token_calls(runtime) as calls:
            result = _decrypt(runtime, key, tampered(index), b"ad")
        assert isinstance(result, InvalidCiphertext), part
        costs[part] = dict(calls)
    assert all(cost == {"decrypt": 2} for cost in costs.values()), costs


def test_format_1_ciphertexts_and_rewrap_of_format_2(runtime) -> None:  # type: ignore[no-untyped-def]
    name = f"rewrap-{uuid.uuid4().hex[:8]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    old = _encrypt(runtime, name, b"made one at a time", b"ad")
    assert _blob(old)[0] == 0x01
    cts = _encrypt_batch(runtime, name, [b"r1", b"r2", b"r3"], b"ad")
    runtime.registry.rotate_sync(name)
    items = [DecryptItem(c, b"ad") for c in [*cts, old]]
    with token_calls(runtime) as calls:
        again = asyncio.run(runtime.transit.rewrap(name, items))
    assert dict(calls) == {"decrypt": 2, "encrypt": 1}  # two data keys in, one out
    made = [str(r.ciphertext) for r in again]
    assert all(c.startswith("vault:v2:") and _blob(c)[0] == FORMAT_V2 for c in made)
    assert _decrypt_batch(runtime, name, made, b"ad") == [
        b"r1",
        b"r2",
        b"r3",
        b"made one at a time",
    ]
    assert _decrypt(runtime, name, old, b"ad") == b"made one at a time"


def test_a_batch_on_a_module_that_writes_its_own_iv(runtime, key: str) -> None:  # type: ignore[no-untyped-def]
    chosen: list[bytes] = []
    with wrapped_keys(runtime, lambda k: IvWritingKey(k, chosen)):
        cts = _encrypt_batch(runtime, key, [b"a", b"b", b"c"], b"ad")
    assert len(chosen) == 1
    assert {_blob(c)[1 : 1 + NONCE_BYTES] for c in cts} == {chosen[0]}
    assert _decrypt_batch(runtime, key, cts, b"ad") == [b"a", b"b", b"c"]
