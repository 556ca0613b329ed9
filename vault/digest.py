"""Keyed digests in the HSM: Transit's HMAC, record digests and blind indexes.

All three are HMACs under a generic secret that never leaves the HSM: an ``hmac`` key's own
versions, or, as in Vault, the separate HMAC key every version of an aes256-gcm96,
ecdsa-p256, ed25519 or rsa-3072 key has beside it (``keytypes.HMAC_ROLE``). Record digests
and blind indexes MAC a structured encoding that starts with :data:`RESERVED_PREFIX`; plain
HMAC refuses inputs that start with it, so no value of one kind can ever be presented as a
value of another (docs/signing-and-partners.md).
"""

from __future__ import annotations

import hmac
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from hsm import HsmOps, KeySpec, MacAlgorithm
from vault.encoding import Versioned, versioned
from vault.errors import BadRequest, VaultError
from vault.hsm import Hsm
from vault.keys import Key, KeyVersion
from vault.keytypes import HMAC_ROLE
from vault.registry import KeyRegistry

# 0xFF never occurs in UTF-8 text, so no textual HMAC input can begin with this.
RESERVED_PREFIX = b"\xffhsm-vault\x00"
RECORD_DIGEST_TAG = RESERVED_PREFIX + b"record-digest/v1\x00"
BLIND_INDEX_TAG = RESERVED_PREFIX + b"blind-index/v1\x00"
STRUCTURED_MAC = MacAlgorithm.SHA256  # record digests and blind indexes: HMAC-SHA-256

DEFAULT_HMAC = "sha2-256"
HMAC_ALGORITHMS = {
    "sha2-224": MacAlgorithm.SHA224,
    "sha2-256": MacAlgorithm.SHA256,
    "sha2-384": MacAlgorithm.SHA384,
    "sha2-512": MacAlgorithm.SHA512,
}
_MAC_BITS = {
    MacAlgorithm.SHA224: 224,
    MacAlgorithm.SHA256: 256,
    MacAlgorithm.SHA384: 384,
    MacAlgorithm.SHA512: 512,
}
# SoftHSM refuses an HMAC key shorter than the hash output (RFC 2104 §3's L) with
# CKR_KEY_SIZE_RANGE; HMAC keys (an `hmac` key's, or another key's own) are 512-bit secrets.
_KEY_BITS = {KeySpec.HMAC256: 256, KeySpec.HMAC512: 512}
MAX_FIELDS = 1000
MAX_NAME_BYTES = 1024
PAN_DIGITS = (12, 19)  # ISO/IEC 7812-1: a primary account number has 12 to 19 digits
NORMALIZATIONS = ("exact", "text", "email", "pan")

FieldValue: TypeAlias = str | int | bool | None
Field: TypeAlias = tuple[str, FieldValue]


def _framed(data: bytes) -> bytes:
    """A 32-bit big-endian length, then the bytes: self-delimiting, so concatenations of
    framed items parse back one way only."""
    return struct.pack(">I", len(data)) + data


def _encode_value(value: FieldValue) -> bytes:
    if value is None:
        return b"n"
    if value is True:
        return b"t"
    if value is False:
        return b"f"
    if isinstance(value, int):
        return b"i" + _framed(str(value).encode("ascii"))
    if isinstance(value, str):
        return b"s" + _framed(value.encode("utf-8"))
    raise BadRequest("field values must be strings, integers, booleans or null")


def encode_record(fields: Sequence[Field]) -> bytes:
    """The canonical encoding of an ordered record (docs/signing-and-partners.md §Record
    digests): the tag, the field count, then per field its framed UTF-8 name, a type tag
    and the framed value. Order matters; names must be unique and non-empty."""
    if not fields:
        raise BadRequest("a record needs at least one field")
    if len(fields) > MAX_FIELDS:
        raise BadRequest(f"a record has at most {MAX_FIELDS} fields")
    seen: set[str] = set()
    parts = [RECORD_DIGEST_TAG, struct.pack(">I", len(fields))]
    for name, value in fields:
        encoded = name.encode("utf-8")
        if not encoded or len(encoded) > MAX_NAME_BYTES:
            raise BadRequest("field names must be 1 to 1024 bytes")
        if name in seen:
            raise BadRequest("field names must be unique within a record")
        seen.add(name)
        parts += (_framed(encoded), _encode_value(value))
    return b"".join(parts)


def _nfkc_casefold(text: str) -> str:
    # Unicode §3.13 / UAX #31: NFKC_Casefold = NFKC(casefold(NFKC(x))).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def normalize(value: str, normalization: str) -> str:
    """Map every spelling of one value to one string (docs/signing-and-partners.md)."""
    if normalization == "exact":
        return value
    if normalization == "text":
        return " ".join(_nfkc_casefold(value).split())
    if normalization == "email":
        address = _nfkc_casefold(value).strip()
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or any(c.isspace() for c in address):
            raise BadRequest("value is not an email address")
        return address
    if normalization == "pan":
        digits = "".join(
            c for c in unicodedata.normalize("NFKC", value) if not c.isspace() and c != "-"
        )
        low, high = PAN_DIGITS
        if not (digits.isascii() and digits.isdigit() and low <= len(digits) <= high):
            raise BadRequest("value is not a card number (12 to 19 digits)")
        return digits
    raise BadRequest(f"normalization must be one of {', '.join(NORMALIZATIONS)}")


def encode_blind_index(value: str, normalization: str, context: str) -> bytes:
    """The tag, then the framed normalization name, context and normalized value."""
    normalized = normalize(value, normalization)
    return (
        BLIND_INDEX_TAG
        + _framed(normalization.encode())
        + _framed(context.encode("utf-8"))
        + _framed(normalized.encode("utf-8"))
    )


def check_plain_input(data: bytes) -> bytes:
    if data.startswith(RESERVED_PREFIX):
        raise BadRequest("input starts with a prefix reserved for record digests and blind indexes")
    return data


def hmac_algorithm(key: Key, name: str | None) -> MacAlgorithm:
    chosen = name or DEFAULT_HMAC
    try:
        algorithm = HMAC_ALGORITHMS[chosen]
    except KeyError:
        raise BadRequest(f"unsupported algorithm {chosen[:32]!r}") from None
    mac = key.mac_object
    key_bits = _KEY_BITS.get(mac[1], 0) if mac is not None else 0
    if _MAC_BITS[algorithm] > key_bits:
        raise BadRequest(
            f"{chosen} HMAC needs a key of at least {_MAC_BITS[algorithm]} bits "
            f"(this key's are {key_bits})"
        )
    return algorithm


def mac_object_id(key: Key, version: KeyVersion) -> bytes:
    """The HSM object that MACs for ``version`` (``key`` supports HMAC: see ``Digests``)."""
    mac = key.mac_object
    role = mac[0] if mac is not None else ""
    if role == HMAC_ROLE and not version.has_hmac_key:
        raise BadRequest(
            f"key version {version.version} has no HMAC key: it was created before this "
            "vault kept one per version; rotate the key and use a newer version"
        )
    return version.object_id(role)


@dataclass(frozen=True, slots=True)
class Mac:
    value: str  # vault:v<N>:<base64>
    key_version: int


@dataclass(frozen=True, slots=True)
class MacCheck:
    """A message and the ``vault:v<N>:<base64>`` value claimed for it."""

    message: bytes
    value: str


class Digests:
    """HMACs, record digests and blind indexes under any key with an HMAC object (every
    Transit type but ``otp-seed``); each call is one HSM job."""

    def __init__(self, registry: KeyRegistry, hsm: Hsm) -> None:
        self.registry = registry
        self.hsm = hsm

    async def _key(self, name: str, newest: int | None = None) -> Key:
        """``newest``: the version a value or the caller names (re-read if it is new here)."""
        key = await self.registry.get(name, newest=newest)
        if key.mac_object is None:  # an OTP seed key, or a partner's decryption key
            raise BadRequest(f"key cannot be used for hmac (a {key.purpose.value} key)")
        return key

    async def _macs(
        self,
        key: Key,
        version: KeyVersion,
        algorithm: MacAlgorithm,
        messages: Sequence[bytes | VaultError],
    ) -> list[Mac | VaultError]:
        todo = [m for m in messages if isinstance(m, bytes)]
        oid = mac_object_id(key, version)

        def job(ops: HsmOps) -> list[bytes]:
            return [ops.mac(oid, algorithm, m) for m in todo]

        macs = iter(await self.hsm.run(job, calls=len(todo)) if todo else [])
        return [
            m
            if isinstance(m, VaultError)
            else Mac(versioned(version.version, next(macs)), version.version)
            for m in messages
        ]

    async def _checks(
        self,
        name: str,
        algorithm: str | MacAlgorithm | None,
        items: Sequence[MacCheck | VaultError],
        what: str,
    ) -> list[bool | VaultError]:
        """Check each claimed MAC under the version it names (``algorithm``: a Transit HMAC
        algorithm name, or the structured MAC itself)."""
        values: list[tuple[MacCheck, Versioned] | VaultError] = []
        for item in items:
            try:
                values.append(
                    item
                    if isinstance(item, VaultError)
                    else (item, Versioned.parse(item.value, what))
                )
            except VaultError as exc:
                values.append(exc)
        newest = max((v[1].version for v in values if isinstance(v, tuple)), default=None)
        key = await self._key(name, newest)
        mac = algorithm if isinstance(algorithm, MacAlgorithm) else hmac_algorithm(key, algorithm)
        plan: list[tuple[bytes, bytes, bytes] | VaultError] = []
        for value in values:
            if isinstance(value, VaultError):
                plan.append(value)
                continue
            item, parsed = value
            try:
                version = key.version_to_check(parsed.version)
                oid = mac_object_id(key, version)
                plan.append((oid, item.message, parsed.decoded(what)))
            except VaultError as exc:
                plan.append(exc)
        todo = [(oid, message) for oid, message, _ in (p for p in plan if isinstance(p, tuple))]

        def job(ops: HsmOps) -> list[bytes]:
            return [ops.mac(oid, mac, message) for oid, message in todo]

        expected = iter(await self.hsm.run(job, calls=len(todo)) if todo else [])
        return [
            p if isinstance(p, VaultError) else hmac.compare_digest(next(expected), p[2])
            for p in plan
        ]

    # -- Transit HMAC ----------------------------------------------------------------------

    async def hmac(
        self,
        name: str,
        inputs: Sequence[bytes | VaultError],
        algorithm: str | None = None,
        key_version: int | None = None,
    ) -> list[Mac | VaultError]:
        key = await self._key(name, key_version)
        mac = hmac_algorithm(key, algorithm)
        version = key.version_to_use(key_version)
        checked: list[bytes | VaultError] = []
        for item in inputs:
            try:
                checked.append(item if isinstance(item, VaultError) else check_plain_input(item))
            except VaultError as exc:
                checked.append(exc)
        return await self._macs(key, version, mac, checked)

    async def verify_hmac(
        self, name: str, items: Sequence[MacCheck | VaultError], algorithm: str | None = None
    ) -> list[bool | VaultError]:
        checked: list[MacCheck | VaultError] = []
        for item in items:
            try:
                if isinstance(item, MacCheck):
                    check_plain_input(item.message)
                checked.append(item)
            except VaultError as exc:
                checked.append(exc)
        return await self._checks(name, algorithm, checked, "HMAC to verify")

    # -- record digests --------------------------------------------------------------------

    async def record_digests(
        self,
        name: str,
        records: Sequence[Sequence[Field] | VaultError],
        key_version: int | None = None,
    ) -> list[Mac | VaultError]:
        key = await self._key(name, key_version)
        version = key.version_to_use(key_version)
        return await self._macs(key, version, STRUCTURED_MAC, [_encoded(r) for r in records])

    async def verify_record_digests(
        self, name: str, items: Sequence[tuple[Sequence[Field], str] | VaultError]
    ) -> list[bool | VaultError]:
        checks: list[MacCheck | VaultError] = []
        for item in items:
            if isinstance(item, VaultError):
                checks.append(item)
                continue
            encoded = _encoded(item[0])
            checks.append(
                encoded if isinstance(encoded, VaultError) else MacCheck(encoded, item[1])
            )
        return await self._checks(name, STRUCTURED_MAC, checks, "digest")

    # -- blind indexes ---------------------------------------------------------------------

    async def blind_indexes(
        self,
        name: str,
        items: Sequence[tuple[str, str, str] | VaultError],
        key_version: int | None = None,
    ) -> list[Mac | VaultError]:
        """``items``: (value, normalization, context) each."""
        key = await self._key(name, key_version)
        version = key.version_to_use(key_version)
        messages: list[bytes | VaultError] = []
        for item in items:
            if isinstance(item, VaultError):
                messages.append(item)
                continue
            try:
                messages.append(encode_blind_index(*item))
            except VaultError as exc:
                messages.append(exc)
        return await self._macs(key, version, STRUCTURED_MAC, messages)


def _encoded(record: Sequence[Field] | VaultError) -> bytes | VaultError:
    if isinstance(record, VaultError):
        return record
    try:
        return encode_record(record)
    except VaultError as exc:
        return exc
