"""Envelope properties on the real SoftHSM2 token (hypothesis drives the inputs)."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.envelope import EncryptItem
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
