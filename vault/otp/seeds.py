"""The ``encrypted_seed`` blob: a seed wrapped by the HSM, bound to its token and parameters.

Layout, inside ``vault:v<N>:base64(...)``::

    0x02 | seed_id[16] | binding[32] | params_len[2] | params | wrapped_len[2] | wrapped | tag[32]

- ``wrapped``: the seed under the key version's ``wrap`` object, AES key wrap with padding
  (RFC 5649, ``CKM_AES_KEY_WRAP_PAD``); it is only ever unwrapped inside the HSM.
- ``binding``: SHA-256 over the length-prefixed ``token_serial``, ``app_id``, ``dfp_hash``;
  a verification naming other values is refused before the HSM is asked anything.
- ``params``: the token's kind, algorithm, digits, period and OCRA suite (JSON), so a caller
  cannot verify a seed under weaker parameters than it was provisioned with.
- ``seed_id``: random, names the seed's row in the replay ledger (kept across rewraps).
- ``tag``: HMAC-SHA256 under the version's ``bind`` object over a context (format, key name,
  version) and every byte before it. AES key wrap has no associated data of its own, so
  this tag is what binds the seed to everything else.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass

from vault.encoding import MalformedValue, Versioned, versioned
from vault.errors import BadRequest, InvalidCiphertext

FORMAT_SEED_V1 = 0x02
SEED_ID_BYTES = 16
BINDING_BYTES = 32
TAG_BYTES = 32
_CONTEXT = b"hsm-vault/otp-seed/v1\x00"
_MAX_FIELD = 1024


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
        try:
            f = json.loads(raw)
            return cls(f["k"], f["a"], int(f["d"]), f.get("p"), f.get("s"))
        except (ValueError, KeyError, TypeError):
            raise InvalidCiphertext() from None


def binding(token_serial: str, app_id: str, dfp_hash: str) -> bytes:
    """Length-prefixed so that no two triples of identifiers collide."""
    h = hashlib.sha256(b"hsm-vault/otp-binding/v1\x00")
    for value in (token_serial, app_id, dfp_hash):
        raw = value.encode()
        if len(raw) > _MAX_FIELD:
            raise BadRequest("token_serial, app_id and dfp_hash must be at most 1024 bytes")
        h.update(struct.pack(">I", len(raw)) + raw)
    return h.digest()


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

    def check_binding(self, token_serial: str, app_id: str, dfp_hash: str) -> bool:
        return hmac.compare_digest(self.binding, binding(token_serial, app_id, dfp_hash))

    def tag_input(self, key_name: str) -> bytes:
        return context(key_name, self.version) + self.signed


def body(seed_id: bytes, bound: bytes, params: TokenParams, wrapped: bytes) -> bytes:
    p = params.encode()
    return (
        bytes([FORMAT_SEED_V1])
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
        if raw[0] != FORMAT_SEED_V1:
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
    return EncryptedSeed(
        version, seed_id, bound, TokenParams.decode(params), wrapped, tag, raw[:pos]
    )
