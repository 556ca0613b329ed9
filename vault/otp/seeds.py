"""The ``encrypted_seed`` blob: a seed wrapped by the HSM, bound to its token and parameters.

Layout, inside ``vault:v<N>:base64(...)``::

    format[1] | seed_id[16] | binding[32] | params_len[2] | params
              | wrapped_len[2] | wrapped | tag[32]

- ``format``: ``0x03``. ``0x02`` blobs (made before 0x03 existed) still verify; see below.
- ``wrapped``: the seed under the key version's ``wrap`` object, AES key wrap with padding
  (RFC 5649, ``CKM_AES_KEY_WRAP_PAD``); it is only ever unwrapped inside the HSM, into a
  sensitive, never-extractable object that can only compute HMACs.
- ``binding``: HMAC-SHA-256 under the version's ``bind`` object over a context (key name,
  version), every other byte of the blob but the tag, and the length-prefixed
  ``token_serial``, ``app_id`` and ``dfp_hash``. Keyed, so a stolen blob does not let anyone
  confirm guessed identifiers offline, and per seed, so two blobs of one token cannot be
  linked by it. It authenticates the blob *and* its token at once: a verification checks it
  alone (one HSM MAC), and only when it fails asks the tag whether the blob is genuine but
  presented with other identifiers (400 "bound to another") or forged (400 "invalid").
- ``params``: the token's kind, algorithm, digits, period and OCRA suite (JSON), so a caller
  cannot verify a seed under weaker parameters than it was provisioned with.
- ``seed_id``: random, names the seed's row in the replay ledger.
- ``tag``: HMAC-SHA256 under the version's ``bind`` object over a context (format, key name,
  version) and every byte before it: what the operations that name a seed without its
  identifiers (state, unlock, deactivate, resync) check. AES key wrap has no associated data
  of its own, so these MACs are what bind the seed to everything else.

Format ``0x02`` differs only in ``binding``: an unkeyed SHA-256 of the identifiers, checked
on the host. Such blobs keep verifying — refusing them would strand every token provisioned
before — and a token moves to ``0x03`` when it is provisioned again (docs/design.md, OTP).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

from vault.encoding import MalformedValue, Versioned, versioned
from vault.errors import BadRequest, InvalidCiphertext
from vault.otp._hotp import MAX_DIGITS, MIN_DIGITS
from vault.otp._plan import ALGORITHMS, MAX_PERIOD, OtpKind

FORMAT_LEGACY = 0x02  # unkeyed binding: still verified, never made
FORMAT_KEYED = 0x03
SEED_ID_BYTES = 16
BINDING_BYTES = 32
TAG_BYTES = 32
_CONTEXT = b"hsm-vault/otp-seed/v1\x00"
_BINDING_CONTEXT = b"hsm-vault/otp-binding/v2\x00"
_LEGACY_BINDING_CONTEXT = b"hsm-vault/otp-binding/v1\x00"
_MAX_FIELD = 1024
_KINDS = frozenset(k.value for k in OtpKind)


@dataclass(frozen=True, slots=True)
class TokenParams:
    kind: str
    algorithm: str
    digits: int
    period: int | None = None
    ocra_suite: str | None = None

    def encode(self) -> bytes:
        fields = {
            "k": self.kind,
            "a": self.algorithm,
            "d": self.digits,
            "p": self.period,
            "s": self.ocra_suite,
        }
        return json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> TokenParams:
        """The parameters a blob names. They are read before the blob's tag is checked (the
        check runs in the HSM with the verification's MACs), so anything a genuine blob
        cannot hold is refused here as the blob not authenticating."""
        try:
            f = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidCiphertext() from None
        if not isinstance(f, dict):
            raise InvalidCiphertext()
        values: list[Any] = [f.get(name) for name in ("k", "a", "d", "p", "s")]
        params = cls(*values)
        if not params._plausible():
            raise InvalidCiphertext()
        return params

    def _plausible(self) -> bool:
        return (
            isinstance(self.kind, str)
            and self.kind in _KINDS
            and isinstance(self.algorithm, str)
            and self.algorithm in ALGORITHMS
            and _integer_in(self.digits, MIN_DIGITS, MAX_DIGITS)
            and (self.period is None or _integer_in(self.period, 1, MAX_PERIOD))
            and (self.ocra_suite is None or isinstance(self.ocra_suite, str))
            and (self.kind != OtpKind.OCRA.value or isinstance(self.ocra_suite, str))
        )


def _integer_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _identifiers(token_serial: str, app_id: str, dfp_hash: str) -> bytes:
    """Length-prefixed so that no two triples of identifiers collide."""
    out = b""
    for value in (token_serial, app_id, dfp_hash):
        raw = value.encode()
        if len(raw) > _MAX_FIELD:
            raise BadRequest("token_serial, app_id and dfp_hash must be at most 1024 bytes")
        out += struct.pack(">I", len(raw)) + raw
    return out


def binding_message(
    key_name: str, version: int, unbound: bytes, token_serial: str, app_id: str, dfp_hash: str
) -> bytes:
    """What the bind key MACs into a format-0x03 blob's ``binding``: ``unbound`` is every
    byte of the blob but the binding and the tag (:func:`unbound`)."""
    name = key_name.encode()
    return (
        _BINDING_CONTEXT
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">I", version)
        + struct.pack(">I", len(unbound))
        + unbound
        + _identifiers(token_serial, app_id, dfp_hash)
    )


def legacy_binding(token_serial: str, app_id: str, dfp_hash: str) -> bytes:
    """A format-0x02 blob's unkeyed ``binding``."""
    return hashlib.sha256(
        _LEGACY_BINDING_CONTEXT + _identifiers(token_serial, app_id, dfp_hash)
    ).digest()


def context(key_name: str, version: int) -> bytes:
    name = key_name.encode()
    return _CONTEXT + struct.pack(">H", len(name)) + name + struct.pack(">I", version)


@dataclass(frozen=True, slots=True)
class EncryptedSeed:
    version: int
    seed_id: bytes
    binding: bytes
    params: TokenParams
    wrapped: bytes
    tag: bytes
    signed: bytes  # every byte the tag covers after the context
    format: int = FORMAT_KEYED
    unbound: bytes = b""  # every byte the binding covers besides its context and identifiers

    @property
    def keyed(self) -> bool:
        return self.format == FORMAT_KEYED

    def check_legacy_binding(self, token_serial: str, app_id: str, dfp_hash: str) -> bool:
        return hmac.compare_digest(self.binding, legacy_binding(token_serial, app_id, dfp_hash))

    def tag_input(self, key_name: str) -> bytes:
        return context(key_name, self.version) + self.signed

    def binding_input(self, key_name: str, token_serial: str, app_id: str, dfp_hash: str) -> bytes:
        return binding_message(key_name, self.version, self.unbound, token_serial, app_id, dfp_hash)


def unbound(seed_id: bytes, params: TokenParams, wrapped: bytes) -> bytes:
    """A format-0x03 blob without its binding and tag: what the binding covers."""
    return _layout(seed_id, b"", params, wrapped)


def body(seed_id: bytes, bound: bytes, params: TokenParams, wrapped: bytes) -> bytes:
    """The blob without its tag: what the tag covers after its context."""
    return _layout(seed_id, bound, params, wrapped)


def _layout(seed_id: bytes, bound: bytes, params: TokenParams, wrapped: bytes) -> bytes:
    p = params.encode()
    return (
        bytes([FORMAT_KEYED])
        + seed_id
        + bound
        + struct.pack(">H", len(p))
        + p
        + struct.pack(">H", len(wrapped))
        + wrapped
    )


def assemble(version: int, signed: bytes, tag: bytes) -> str:
    return versioned(version, signed + tag)


def parse(text: str) -> EncryptedSeed:
    try:
        value = Versioned.parse(text, "encrypted_seed")
        version, raw = value.version, value.decoded("encrypted_seed")
    except MalformedValue:
        raise InvalidCiphertext() from None
    try:
        blob_format = raw[0]
        if blob_format not in (FORMAT_LEGACY, FORMAT_KEYED):
            raise InvalidCiphertext()
        pos = 1
        seed_id = raw[pos : pos + SEED_ID_BYTES]
        pos += SEED_ID_BYTES
        bound = raw[pos : pos + BINDING_BYTES]
        pos += BINDING_BYTES
        (plen,) = struct.unpack_from(">H", raw, pos)
        pos += 2
        params = raw[pos : pos + plen]
        pos += plen
        (wlen,) = struct.unpack_from(">H", raw, pos)
        pos += 2
        wrapped = raw[pos : pos + wlen]
        pos += wlen
        tag = raw[pos:]
    except (IndexError, struct.error):
        raise InvalidCiphertext() from None
    if (
        len(seed_id) != SEED_ID_BYTES
        or len(bound) != BINDING_BYTES
        or len(wrapped) != wlen
        or len(tag) != TAG_BYTES
    ):
        raise InvalidCiphertext()
    head = 1 + SEED_ID_BYTES
    return EncryptedSeed(
        version,
        seed_id,
        bound,
        TokenParams.decode(params),
        wrapped,
        tag,
        raw[:pos],
        blob_format,
        raw[:head] + raw[head + BINDING_BYTES : pos],
    )
