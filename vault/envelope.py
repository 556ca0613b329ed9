"""Envelope encryption: a fresh data key per message, wrapped by an HSM-resident key version.

Byte layout (docs/envelope.md explains each choice)::

    vault:v<N>:base64( 0x01 | wrap_nonce[12] | wrapped_dek[48] | payload[len+16] )

- ``wrapped_dek``: AES-256-GCM in the HSM under key version N, over the 32-byte data key,
  with associated data ``context(name, N)``; the nonce is deterministic (SP 800-38D §8.2.1):
  a 4-byte fixed field unique to the process (allocated by the database) and an 8-byte
  invocation counter, so no nonce repeats under a key however many messages it wraps.
- ``payload``: AES-256-GCM on the host under the data key, with associated data
  ``context(name, N) | associated_data``. The data key is used exactly once, so its nonce
  is the constant zero block (SP 800-38D §8.2: uniqueness is per key).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import BadRequest, InvalidCiphertext
from vault.hsm import HsmOps
from vault.keys import Key, KeyVersion

FORMAT_V1 = 0x01
NONCE_BYTES = 12  # SP 800-38D §8.2.1: 96-bit IVs, deterministic construction
NONCE_PREFIX_BYTES = 4  # the fixed field
DEK_BYTES = 32  # AES-256 data key
TAG_BYTES = 16  # full 128-bit GCM tag
WRAPPED_DEK_BYTES = DEK_BYTES + TAG_BYTES
HEADER_BYTES = 1 + NONCE_BYTES + WRAPPED_DEK_BYTES
MAX_INVOCATIONS = 2**64 - 1  # the 8-byte invocation field
_PAYLOAD_NONCE = bytes(NONCE_BYTES)
_CONTEXT_TAG = b"hsm-vault/envelope/v1\x00"
PREFIX = "vault:v"
_VERSION = re.compile(r"[1-9][0-9]{0,8}")  # ASCII only: one spelling per ciphertext
DATAKEY_BITS = (128, 256, 512)


@functools.lru_cache(maxsize=4096)
def context(key_name: str, version: int) -> bytes:
    """What every wrapped data key and payload is bound to: format, key name and version."""
    name = key_name.encode()
    return _CONTEXT_TAG + struct.pack(">H", len(name)) + name + struct.pack(">I", version)


class NonceSequence:
    """Deterministic 96-bit nonces: a per-process fixed field and a counter."""

    def __init__(self, prefix: int) -> None:
        if not 0 < prefix < 2 ** (8 * NONCE_PREFIX_BYTES):
            raise ValueError("nonce prefix out of range (0 is reserved for the canary)")
        self._prefix = prefix.to_bytes(NONCE_PREFIX_BYTES, "big")
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        n = next(self._counter)
        if n > MAX_INVOCATIONS:
            raise RuntimeError("nonce counter exhausted: restart the process")
        return self._prefix + n.to_bytes(NONCE_BYTES - NONCE_PREFIX_BYTES, "big")


@dataclass(frozen=True, slots=True)
class Sealed:
    ciphertext: str
    version: int


@dataclass(frozen=True, slots=True)
class ParsedCiphertext:
    version: int
    nonce: bytes
    wrapped_dek: bytes
    payload: bytes


def b64decode(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} is not valid base64") from None


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode()


def split_prefixed(text: str) -> tuple[int, bytes]:
    """``vault:v<N>:<base64>`` → (N, bytes). Any malformation is an invalid ciphertext."""
    if not text.startswith(PREFIX):
        raise InvalidCiphertext()
    head, sep, body = text[len(PREFIX) :].partition(":")
    if not sep or not _VERSION.fullmatch(head):
        raise InvalidCiphertext()
    try:
        return int(head), base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCiphertext() from None


def parse(text: str) -> ParsedCiphertext:
    version, raw = split_prefixed(text)
    if len(raw) < HEADER_BYTES + TAG_BYTES or raw[0] != FORMAT_V1:
        raise InvalidCiphertext()
    return ParsedCiphertext(
        version=version,
        nonce=raw[1 : 1 + NONCE_BYTES],
        wrapped_dek=raw[1 + NONCE_BYTES : HEADER_BYTES],
        payload=raw[HEADER_BYTES:],
    )


def _assemble(version: int, nonce: bytes, wrapped: bytes, payload: bytes) -> str:
    blob = bytes([FORMAT_V1]) + nonce + wrapped + payload
    return f"{PREFIX}{version}:{b64encode(blob)}"


@dataclass(frozen=True, slots=True)
class EncryptItem:
    plaintext: bytes
    associated_data: bytes
    key_version: int | None = None


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A data key drawn from the HSM and its wrapped form (the data key stays in memory
    only for the one message it encrypts)."""

    dek: bytes
    nonce: bytes
    wrapped: bytes


class Envelope:
    """Encrypts and decrypts for one key; the HSM part of each call is one job."""

    def __init__(self, nonces: NonceSequence) -> None:
        self._nonces = nonces

    def wrap_job(
        self, key: Key, versions: Sequence[KeyVersion], extra_random: int = 0
    ) -> Callable[[HsmOps], tuple[bytes, list[Wrapped]]]:
        """A job that wraps one fresh data key per entry of ``versions`` under its version,
        and draws ``extra_random`` bytes from the HSM's generator (a data key handed out).

        The per-message data keys come from the host's CSPRNG (``os.urandom``): they live in
        host memory beside the plaintext they protect either way, and one HSM call per
        message is the budget of the hot path.
        """
        plan = [
            (
                os.urandom(DEK_BYTES),
                v.object_id(),
                self._nonces.next(),
                context(key.name, v.version),
            )
            for v in versions
        ]

        def job(ops: HsmOps) -> tuple[bytes, list[Wrapped]]:
            extra = ops.random(extra_random) if extra_random else b""
            out = [
                Wrapped(dek, nonce, ops.encrypt_gcm(kek, nonce, dek, ctx))
                for dek, kek, nonce, ctx in plan
            ]
            return extra, out

        return job

    @staticmethod
    def seal(key: Key, version: int, wrapped: Wrapped, item: EncryptItem) -> str:
        ctx = context(key.name, version)
        aad = ctx + item.associated_data
        payload = AESGCM(wrapped.dek).encrypt(_PAYLOAD_NONCE, item.plaintext, aad)
        return _assemble(version, wrapped.nonce, wrapped.wrapped, payload)

    @staticmethod
    def unwrap_job(
        key: Key, parsed: Sequence[ParsedCiphertext | None]
    ) -> Callable[[HsmOps], list[bytes | BaseException | None]]:
        """A job that unwraps the data key of each parsed ciphertext (``None`` entries and
        failures come back as the exception, so one bad item fails only itself)."""
        plan: list[tuple[bytes, bytes, bytes, bytes] | BaseException | None] = []
        for p in parsed:
            if p is None:
                plan.append(None)
                continue
            try:
                version = key.for_decryption(p.version)
            except InvalidCiphertext as exc:
                plan.append(exc)
                continue
            plan.append((version.object_id(), p.nonce, p.wrapped_dek, context(key.name, p.version)))

        def job(ops: HsmOps) -> list[bytes | BaseException | None]:
            out: list[bytes | BaseException | None] = []
            for entry in plan:
                if entry is None or isinstance(entry, BaseException):
                    out.append(entry)
                    continue
                kek, nonce, wrapped, ctx = entry
                try:
                    out.append(ops.decrypt_gcm(kek, nonce, wrapped, ctx))
                except InvalidCiphertext as exc:
                    out.append(exc)
            return out

        return job

    @staticmethod
    def open(key: Key, parsed: ParsedCiphertext, dek: bytes, associated_data: bytes) -> bytes:
        ctx = context(key.name, parsed.version)
        try:
            return AESGCM(dek).decrypt(_PAYLOAD_NONCE, parsed.payload, ctx + associated_data)
        except InvalidTag:
            raise InvalidCiphertext() from None
