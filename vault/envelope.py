"""Envelope encryption: fresh data keys, wrapped by an HSM-resident key version.

Byte layouts (docs/envelope.md explains each choice)::

    vault:v<N>:base64( 0x01 | wrap_nonce[12] | wrapped_dek[48] | payload[len+16] )
    vault:v<N>:base64( 0x02 | wrap_nonce[12] | wrapped_dek[48] | item_nonce[12] | payload[len+16] )

- ``wrapped_dek``: AES-256-GCM in the HSM under key version N, over the 32-byte data key,
  with associated data ``context(name, N)`` (format 0x01) or ``context_v2(name, N)`` (0x02);
  ``wrap_nonce`` is a random 96-bit IV (SP 800-38D §8.2.2), and what is stored is the IV the
  HSM reports it used (some modules choose their own). No database state takes part:
  docs/envelope.md gives the bound and the reasons.
- ``payload``: AES-256-GCM on the host under the data key, with associated data
  ``context | associated_data`` (the format's context).
- Format 0x01 (a single message, a data key): the data key is used exactly once, so its
  nonce is the constant zero block (SP 800-38D §8.2: uniqueness is per key).
- Format 0x02 (a batch of more than one message): one data key per (request, key version)
  seals every item of that version, each under its own random 96-bit ``item_nonce``; at most
  ``MAX_ITEMS_PER_DATA_KEY`` items per data key, so the chance that two of its nonces repeat
  is below 2^-73 (birthday bound n^2 / 2^97). Each item carries the wrapped data key and
  decrypts alone.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm import HsmOps
from hsm.errors import DecryptionFailed
from vault.encoding import MalformedValue, Versioned, b64encode, versioned
from vault.errors import InvalidCiphertext, VaultError
from vault.keys import Key, KeyVersion

FORMAT_V1 = 0x01  # one message per data key, zero payload nonce
FORMAT_V2 = 0x02  # a batch's items share a data key, each with its own random nonce
NONCE_BYTES = 12  # SP 800-38D §8.2.2: 96-bit random IVs
DEK_BYTES = 32  # AES-256 data key
TAG_BYTES = 16  # full 128-bit GCM tag
WRAPPED_DEK_BYTES = DEK_BYTES + TAG_BYTES
HEADER_BYTES = 1 + NONCE_BYTES + WRAPPED_DEK_BYTES
HEADER_V2_BYTES = HEADER_BYTES + NONCE_BYTES  # the item nonce follows the wrapped data key
# Items sealed under one format-0x02 data key: with random 96-bit nonces the chance that any
# two of n repeat is at most n(n-1)/2^97, below 2^-73 for n = 2^12 (SP 800-38D §8.3 asks
# for 2^-32). A batch larger than this (max_batch_items is 1000 by default) draws more keys.
MAX_ITEMS_PER_DATA_KEY = 4096
_PAYLOAD_NONCE = bytes(NONCE_BYTES)
_CONTEXT_TAG = b"hsm-vault/envelope/v1\x00"
_CONTEXT_TAG_V2 = b"hsm-vault/envelope/v2\x00"
_CONTEXT_TAGS = {FORMAT_V1: _CONTEXT_TAG, FORMAT_V2: _CONTEXT_TAG_V2}
_HEADERS = {FORMAT_V1: HEADER_BYTES, FORMAT_V2: HEADER_V2_BYTES}  # where the payload starts
DATAKEY_BITS = (128, 256, 512)
UNDECIDED = b""  # a data key that did not unwrap (a real one is DEK_BYTES long)


@functools.lru_cache(maxsize=4096)
def _context(tag: bytes, key_name: str, version: int) -> bytes:
    name = key_name.encode()
    return tag + struct.pack(">H", len(name)) + name + struct.pack(">I", version)


def context(key_name: str, version: int, fmt: int = FORMAT_V1) -> bytes:
    """What every wrapped data key and payload is bound to: format, key name and version."""
    return _context(_CONTEXT_TAGS[fmt], key_name, version)


def context_v2(key_name: str, version: int) -> bytes:
    """Format 0x02's context: another tag, so no blob authenticates under the other format."""
    return _context(_CONTEXT_TAG_V2, key_name, version)


@dataclass(frozen=True, slots=True)
class Sealed:
    ciphertext: str
    version: int


@dataclass(frozen=True, slots=True)
class ParsedCiphertext:
    version: int
    nonce: bytes  # the wrap IV
    wrapped_dek: bytes
    payload: bytes
    format: int = FORMAT_V1
    item_nonce: bytes = _PAYLOAD_NONCE  # the payload's nonce (0x01: always zero)

    @property
    def wrapped_key(self) -> tuple[int, int, bytes, bytes]:
        """What identifies the data key: items equal here share one unwrap."""
        return (self.version, self.format, self.nonce, self.wrapped_dek)


def parse(text: str) -> ParsedCiphertext:
    """Any malformation is an invalid ciphertext, with the one message for all of them."""
    try:
        value = Versioned.parse(text, "ciphertext")
        version, raw = value.version, value.decoded("ciphertext")
    except MalformedValue:
        raise InvalidCiphertext() from None
    header = _HEADERS.get(raw[0]) if raw else None
    if header is None or len(raw) < header + TAG_BYTES:
        raise InvalidCiphertext()
    return ParsedCiphertext(
        version=version,
        nonce=raw[1 : 1 + NONCE_BYTES],
        wrapped_dek=raw[1 + NONCE_BYTES : HEADER_BYTES],
        payload=raw[header:],
        format=raw[0],
        item_nonce=raw[HEADER_BYTES:header] or _PAYLOAD_NONCE,  # 0x01: none, zero
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
    """A data key drawn for one message (format 0x01) or for a batch's items under one key
    version (0x02), and its wrapped form. The data key stays in memory only for the request
    that drew it."""

    dek: bytes
    nonce: bytes
    wrapped: bytes
    format: int = FORMAT_V1


class BatchSealer:
    """Seals the items of one batch that share a key version under one format-0x02 data key:
    one AES-GCM key schedule for all of them, a fresh random nonce for each."""

    __slots__ = ("_aead", "_context", "_head", "_prefix", "_sealed")

    def __init__(self, key: Key, version: int, wrapped: Wrapped) -> None:
        assert wrapped.format == FORMAT_V2
        self._aead = AESGCM(wrapped.dek)
        self._context = context_v2(key.name, version)
        self._head = bytes([FORMAT_V2]) + wrapped.nonce + wrapped.wrapped
        self._prefix = versioned(version, "")  # "vault:v<N>:"
        self._sealed = 0

    @property
    def full(self) -> bool:
        return self._sealed >= MAX_ITEMS_PER_DATA_KEY

    def seal(self, item: EncryptItem) -> str:
        # The bound on nonces per data key (MAX_ITEMS_PER_DATA_KEY) holds whatever the caller.
        if self._sealed >= MAX_ITEMS_PER_DATA_KEY:
            raise RuntimeError("a format-0x02 data key sealed as many items as it may")
        self._sealed += 1
        nonce = os.urandom(NONCE_BYTES)
        payload = self._aead.encrypt(nonce, item.plaintext, self._context + item.associated_data)
        return self._prefix + b64encode(self._head + nonce + payload)


class BatchSealers:
    """The format-0x02 data keys of one batch request, by key version: one per version, one
    more for each further ``MAX_ITEMS_PER_DATA_KEY`` items of that version."""

    __slots__ = ("_current", "_spare")

    def __init__(self, key: Key, planned: Sequence[KeyVersion], wrapped: Sequence[Wrapped]) -> None:
        self._spare: dict[int, list[BatchSealer]] = {}
        for v, w in zip(planned, wrapped, strict=True):
            self._spare.setdefault(v.version, []).append(BatchSealer(key, v.version, w))
        self._current = {n: spare.pop() for n, spare in self._spare.items()}

    @staticmethod
    def plan(versions: Sequence[KeyVersion]) -> list[KeyVersion]:
        """The versions to wrap a data key under for a batch whose items use ``versions``."""
        counts: dict[int, int] = {}
        by_number: dict[int, KeyVersion] = {}
        for v in versions:
            counts[v.version] = counts.get(v.version, 0) + 1
            by_number.setdefault(v.version, v)
        return [
            by_number[n]
            for n, count in counts.items()
            for _ in range(-(-count // MAX_ITEMS_PER_DATA_KEY))
        ]

    def seal(self, version: int, item: EncryptItem) -> str:
        sealer = self._current[version]
        if sealer.full:
            sealer = self._current[version] = self._spare[version].pop()
        return sealer.seal(item)


class Envelope:
    """Encrypts and decrypts for one key; the HSM part of each call is one job."""

    @staticmethod
    def wrap_job(
        key: Key,
        versions: Sequence[KeyVersion],
        extra_random: int = 0,
        fmt: int = FORMAT_V1,
    ) -> Callable[[HsmOps], tuple[bytes, list[Wrapped]]]:
        """A job that wraps one fresh data key per entry of ``versions`` under its version
        (bound to the context of format ``fmt``), and draws ``extra_random`` bytes from the
        HSM's generator (a data key handed out).

        The data keys come from the host's CSPRNG (``os.urandom``): they live in host memory
        beside the plaintext they protect either way, and one HSM call per data key is the
        budget of the hot path.
        """
        plan = [
            (
                os.urandom(DEK_BYTES),
                v.object_id(),
                os.urandom(NONCE_BYTES),
                context(key.name, v.version, fmt),
            )
            for v in versions
        ]

        def job(ops: HsmOps) -> tuple[bytes, list[Wrapped]]:
            extra = ops.random(extra_random) if extra_random else b""
            out = []
            for dek, kek, offered, ctx in plan:
                used, wrapped = ops.encrypt_gcm(kek, offered, dek, ctx)
                out.append(Wrapped(dek, used, wrapped, fmt))
            return extra, out

        return job

    @staticmethod
    def seal(key: Key, version: int, wrapped: Wrapped, item: EncryptItem) -> str:
        """One message under a data key of its own (format 0x01, zero nonce)."""
        assert wrapped.format == FORMAT_V1
        ctx = context(key.name, version)
        aad = ctx + item.associated_data
        payload = AESGCM(wrapped.dek).encrypt(_PAYLOAD_NONCE, item.plaintext, aad)
        return _assemble(version, wrapped.nonce, wrapped.wrapped, payload)

    @staticmethod
    def unwrap_job(
        key: Key, parsed: Sequence[ParsedCiphertext | None]
    ) -> tuple[Callable[[HsmOps], list[bytes | VaultError | None]], int]:
        """A job that unwraps the data key of each parsed ciphertext, and how many HSM calls
        it makes: one per distinct wrapped data key (the items of a format-0x02 batch share
        one). ``None`` entries stay ``None``; an entry whose data key did not decrypt comes
        back as ``UNDECIDED`` (see :meth:`check_job`); any other failure of an item is its
        own error. Items that share a data key get the same ``bytes`` object back."""
        groups: dict[tuple[int, int, bytes, bytes], int] = {}
        calls: list[tuple[bytes, bytes, bytes, bytes]] = []
        plan: list[int | VaultError | None] = []
        for p in parsed:
            if p is None:
                plan.append(None)
                continue
            wanted = p.wrapped_key
            index = groups.get(wanted)
            if index is None:
                try:
                    version = key.version_to_check(p.version)
                except VaultError as exc:
                    plan.append(exc)
                    continue
                index = groups[wanted] = len(calls)
                ctx = context(key.name, p.version, p.format)
                calls.append((version.object_id(), p.nonce, p.wrapped_dek, ctx))
            plan.append(index)

        def job(ops: HsmOps) -> list[bytes | VaultError | None]:
            deks: list[bytes] = []
            for kek, nonce, wrapped, ctx in calls:
                try:
                    deks.append(ops.decrypt_gcm(kek, nonce, wrapped, ctx))
                except DecryptionFailed:  # this item's fault or the device's: decided later
                    deks.append(UNDECIDED)
            return [deks[e] if isinstance(e, int) else e for e in plan]

        return job, len(calls)

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
        key: Key,
        parsed: ParsedCiphertext,
        dek: bytes,
        associated_data: bytes,
        aead: AESGCM | None = None,
    ) -> bytes | None:
        """The plaintext, or ``None`` when the payload does not authenticate. A data key that
        did not unwrap (``UNDECIDED``) is replaced by a random one, so the host does the same
        work either way (as RFC 7516 §11.5 does for JWE). ``aead``: the data key's AES-GCM
        object when the caller opens several items under it (:func:`openers`)."""
        ctx = context(key.name, parsed.version, parsed.format)
        if aead is None:
            aead = AESGCM(dek or os.urandom(DEK_BYTES))
        try:
            return aead.decrypt(parsed.item_nonce, parsed.payload, ctx + associated_data)
        except InvalidTag:
            return None


def openers(deks: Sequence[bytes | VaultError | None]) -> Iterator[AESGCM | None]:
    """One AES-GCM object per distinct data key (items that share a data key share it; the
    data keys that did not unwrap share one random key), aligned with ``deks``."""
    made: dict[bytes, AESGCM] = {}
    for dek in deks:
        if not isinstance(dek, bytes):
            yield None
            continue
        aead = made.get(dek)
        if aead is None:
            aead = made[dek] = AESGCM(dek or os.urandom(DEK_BYTES))
        yield aead
