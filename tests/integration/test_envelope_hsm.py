"""Envelope properties on the real SoftHSM2 token (hypothesis drives the inputs)."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.key_doubles import IvWritingKey, token_calls, wrapped_keys
from vault.envelope import HEADER_BYTES, NONCE_BYTES, EncryptItem
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
