"""What the audit chain is made of, byte for byte (docs/audit.md has the same in prose).

A *record* is one JSON object on one line, encoded once and stored exactly as hashed; its
first member is its sequence number ``seq``. Records form a hash chain::

    hash(0) = 32 zero bytes                  (or a signed anchor's hash after pruning)
    hash(n) = SHA-256(hash(n-1) || body(n))

A *checkpoint* signs the chain's head: a JSON object naming the record it covers (``seq``,
``hash``) and the checkpoint before it (``prev_seq``, ``prev`` = SHA-256 of that checkpoint's
body), signed with ECDSA P-256 over SHA-256 (the DER signature ``openssl dgst -sha256
-verify`` takes) by an HSM key kept for the audit alone. The signature covers every record up
to ``seq`` through the chain, and every earlier checkpoint through ``prev``.

Records never hold a secret: no plaintext, key, seed, OTP, PIN or token, and subjects only as
keyed digests.
"""

from __future__ import annotations

import hashlib
import math
import time

import msgspec

ZERO_HASH = bytes(32)
Detail = str | int | float | bool | None


class Record(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One request (``type: "request"``) or one lifecycle event (``type: "event"``)."""

    seq: int = 0  # set when the record joins the chain
    at: str
    type: str
    request_id: str | None = None
    service: str | None = None  # the authenticated service
    claimed_service: str | None = None  # a refused token's claim (a known service's name)
    token_id: str | None = None  # the token's jti (an identifier, not a credential)
    client: str | None = None  # source address
    operation: str | None = None
    key: str | None = None
    key_version: int | None = None
    status: int | None = None
    error: str | None = None  # the error's class
    reason: str | None = None  # why a credential or a quota refused (a fixed text)
    subjects: tuple[str, ...] = ()  # keyed digests of the subjects, never their values
    findings: tuple[str, ...] = ()  # e.g. "signature.invalid", "otp.replayed"
    evidence: dict[str, str] | None = None  # e.g. a partner's verified JWS: digest, signature
    event: str | None = None  # "key.rotate", "tokens.revoke", "audit.prune", ...
    actor: str | None = None
    details: dict[str, Detail] | None = None
    # Requests for this key and operation so far, this one included. The last member (and
    # ``seq`` the first), so that PostgreSQL can write both into a body (vault/store/audit.py).
    count: int | None = None


class Checkpoint(msgspec.Struct, kw_only=True):
    seq: int
    at: str
    hash: str  # hex of record ``seq``'s hash
    prev_seq: int  # the checkpoint before this one (0: none)
    prev: str  # hex SHA-256 of that checkpoint's body (zeros: none)
    key: str  # the signing key's name (its public key is exported under this name)


_encoder = msgspec.json.Encoder()


def encode(value: Record | Checkpoint) -> bytes:
    return _encoder.encode(value)


def decode_record(body: bytes) -> Record:
    return msgspec.json.decode(body, type=Record)


def decode_checkpoint(body: bytes) -> Checkpoint:
    return msgspec.json.decode(body, type=Checkpoint)


def link(previous: bytes, body: bytes) -> bytes:
    return hashlib.sha256(previous + body).digest()


def checkpoint_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


_second: tuple[int, str] = (-1, "")


def timestamp(at: float) -> str:
    """RFC 3339 in UTC with microseconds (the seconds formatted once per second: every
    request's record needs one)."""
    global _second  # noqa: PLW0603 - a one-entry cache, replaced whole (thread-safe)
    whole = math.floor(at)
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{min(int((at - whole) * 1e6), 999_999):06d}Z"
