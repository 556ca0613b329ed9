"""Envelope encryption: a fresh data key per message, wrapped by an HSM-resident key version.

Byte layout (docs/envelope.md explains each choice)::

    vault:v<N>:base64( 0x01 | wrap_nonce[12] | wrapped_dek[48] | payload[len+16] )

- ``wrapped_dek``: AES-256-GCM in the HSM under key version N, over the 32-byte data key,
  with associated data ``context(name, N)``; ``wrap_nonce`` is a random 96-bit IV (SP
  800-38D §8.2.2), and what is stored is the IV the HSM reports it used (some modules choose
  their own). No database state takes part: docs/envelope.md gives the bound and the reasons.
- ``payload``: AES-256-GCM on the host under the data key, with associated data
  ``context(name, N) | associated_data``. The data key is used exactly once, so its nonce
  is the constant zero block (SP 800-38D §8.2: uniqueness is per key).
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm import HsmOps
from hsm.errors import DecryptionFailed
from vault.encoding import MalformedValue, Versioned, versioned
from vault.errors import InvalidCiphertext, VaultError
from vault.keys import Key, KeyVersion

FORMAT_V1 = 0x01
NONCE_BYTES = 12  # SP 800-38D §8.2.2: 96-bit random IVs
DEK_BYTES = 32  # AES-256 data key
TAG_BYTES = 16  # full 128-bit GCM tag
WRAPPED_DEK_BYTES = DEK_BYTES + TAG_BYTES
HEADER_BYTES = 1 + NONCE_BYTES + WRAPPED_DEK_BYTES
_PAYLOAD_NONCE = bytes(NONCE_BYTES)
_CONTEXT_TAG = b"hsm-vault/envelope/v1\x00"
DATAKEY_BITS = (128, 256, 512)
UNDECIDED = b""  # a data key that did not unwrap (a real one is DEK_BYTES long)


@functools.lru_cache(maxsize=4096)
def context(key_name: str, version: int) -> bytes:
    """What every wrapped data key and payload is bound to: format, key name and version."""
    name = key_name.encode()
    return _CONTEXT_TAG + struct.pack(">H", len(name)) + name + struct.pack(">I", version)


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


def parse(text: str) -> ParsedCiphertext:
    """Any malformation is an invalid ciphertext, with the one message for all of them."""
    try:
        value = Versioned.parse(text, "ciphertext")
        version, raw = value.version, value.decoded("ciphertext")
    except MalformedValue:
        raise InvalidCiphertext() from None
    if len(raw) < HEADER_BYTES + TAG_BYTES or raw[0] != FORMAT_V1:
        raise InvalidCiphertext()
    return ParsedCiphertext(
        version=version,
        nonce=raw[1 : 1 + NONCE_BYTES],
        wrapped_dek=raw[1 + NONCE_BYTES : HEADER_BYTES],
        payload=raw[HEADER_BYTES:],
    )


def _assemble(version: int, nonce: bytes, wrapped: bytes, payload: bytes) -> str:
    return versioned(version, bytes([FORMAT_V1]) + nonce + wrapped + payload)


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

    @staticmethod
    def wrap_job(
        key: Key, versions: Sequence[KeyVersion], extra_random: int = 0
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
                os.urandom(NONCE_BYTES),
                context(key.name, v.version),
            )
            for v in versions
        ]

        def job(ops: HsmOps) -> tuple[bytes, list[Wrapped]]:
            extra = ops.random(extra_random) if extra_random else b""
            out = []
            for dek, kek, offered, ctx in plan:
                used, wrapped = ops.encrypt_gcm(kek, offered, dek, ctx)
                out.append(Wrapped(dek, used, wrapped))
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
    ) -> Callable[[HsmOps], list[bytes | VaultError | None]]:
        """A job that unwraps the data key of each parsed ciphertext. ``None`` entries stay
        ``None``; an entry whose data key did not decrypt comes back as ``UNDECIDED`` (see
        :meth:`check_job`); any other failure of an item is its own error."""
        plan: list[tuple[bytes, bytes, bytes, bytes] | VaultError | None] = []
        for p in parsed:
            if p is None:
                plan.append(None)
                continue
            try:
                version = key.version_to_check(p.version)
            except VaultError as exc:
                plan.append(exc)
                continue
            plan.append((version.object_id(), p.nonce, p.wrapped_dek, context(key.name, p.version)))

        def job(ops: HsmOps) -> list[bytes | VaultError | None]:
            out: list[bytes | VaultError | None] = []
            for entry in plan:
                if entry is None or isinstance(entry, VaultError):
                    out.append(entry)
                    continue
                kek, nonce, wrapped, ctx = entry
                try:
                    out.append(ops.decrypt_gcm(kek, nonce, wrapped, ctx))
                except DecryptionFailed:  # this item's fault or the device's: decided later
                    out.append(UNDECIDED)
            return out

        return job

    @staticmethod
    def check_job(keks: Sequence[bytes]) -> Callable[[HsmOps], dict[bytes, bool]]:
        """A job that asks, for each key version (by object id), whether a known-good
        ciphertext still decrypts under it: then a message that failed under it is at fault
        (400), otherwise the device is (503). Run for every message that failed, whether its
        data key or its payload did not authenticate, so both cost the same HSM work and
        neither the answer nor its timing says which part was tampered with."""
        wanted = list(dict.fromkeys(keks))

        def job(ops: HsmOps) -> dict[bytes, bool]:
            return {kek: ops.key_works(kek) for kek in wanted}

        return job

    @staticmethod
    def open(
        key: Key, parsed: ParsedCiphertext, dek: bytes, associated_data: bytes
    ) -> bytes | None:
        """The plaintext, or ``None`` when the payload does not authenticate. A data key that
        did not unwrap (``UNDECIDED``) is replaced by a random one, so the host does the same
        work either way (as RFC 7516 §11.5 does for JWE)."""
        ctx = context(key.name, parsed.version)
        try:
            return AESGCM(dek or os.urandom(DEK_BYTES)).decrypt(
                _PAYLOAD_NONCE, parsed.payload, ctx + associated_data
            )
        except InvalidTag:
            return None
