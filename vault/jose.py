"""A small, strict JOSE profile for sealed partner messages: a compact JWS (RFC 7515) nested
in a compact JWE (RFC 7516), with algorithms fixed by configuration, never by the message.

Host-side parts only: everything here works on public keys, on the content key, or on the
ECDH shared secret Z the HSM derived. The private-key steps (signing, RSA-OAEP decryption,
ECDH) are HSM jobs in ``vault/partners.py``.

- signatures: ``ES256`` (raw ``r || s``, RFC 7518 §3.4), ``EdDSA`` (Ed25519, RFC 8037 §3.1),
  ``PS256`` (RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt, RFC 7518 §3.5);
- key management: ``RSA-OAEP-256`` / ``RSA-OAEP`` (RFC 7518 §4.3) and ``ECDH-ES+A256KW``
  (RFC 7518 §4.6: Concat KDF over Z, then AES key wrap of the content key, RFC 3394);
- content: ``A256GCM`` only (RFC 7518 §5.3), with a 96-bit IV and a 128-bit tag.

``alg: none`` and every other algorithm are refused, as are ``zip`` and any ``crit``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from vault.encoding import b64url, b64url_decode
from vault.errors import BadRequest
from vault.signing import P256_COORDINATE_BYTES, PublicKey, ecdsa_raw_to_der

ENC = "A256GCM"
CEK_BYTES = 32  # A256GCM's key (RFC 7518 §5.3)
IV_BYTES = 12  # RFC 7518 §5.3: a 96-bit IV
TAG_BYTES = 16  # RFC 7518 §5.3: a 128-bit authentication tag
KEK_BITS = 256  # ECDH-ES+A256KW derives an AES-256 key-wrapping key (RFC 7518 §4.6.2)
PS256_SALT_BYTES = 32  # RFC 7518 §3.5: salt as long as the SHA-256 output

RSA_OAEP_256 = "RSA-OAEP-256"
RSA_OAEP = "RSA-OAEP"
ECDH_ES_A256KW = "ECDH-ES+A256KW"
KEY_MANAGEMENT = (RSA_OAEP_256, RSA_OAEP, ECDH_ES_A256KW)
OAEP_HASH = {RSA_OAEP_256: "sha256", RSA_OAEP: "sha1"}
SIGNATURE_ALGORITHMS = ("ES256", "EdDSA", "PS256")
# RFC 9864 §2.2 names Ed25519 signatures "Ed25519" and deprecates the polymorphic "EdDSA";
# we send "EdDSA" (what most libraries know) and accept either.
_SAME_ALGORITHM = {"EdDSA": ("EdDSA", "Ed25519")}
MIN_RSA_BITS = 2048
MAX_COMPACT_CHARS = 4 * 1024 * 1024


class JoseError(BadRequest):
    """A message that does not fit the profile; the text says which rule, never a secret."""


class SignatureInvalid(JoseError):
    """A partner's signature that does not verify (its own class: the audit trail notes it)."""

    def __init__(self) -> None:
        super().__init__("message signature is not valid")


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    """A compact JWS whose signature verified, as evidence: the protected header and the
    signature as sent, and the SHA-256 of the payload segment (not the payload itself)."""

    payload: bytes
    protected: str
    payload_sha256: str
    signature: str


# -- encoding ------------------------------------------------------------------------------


def encode_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            # RFC 7515 §5.2 / RFC 7516 §5.2: duplicate member names are rejected.
            raise JoseError("duplicate member name in a JOSE object")
        result[name] = value
    return result


def _reject_constant(name: str) -> Any:
    raise JoseError(f"{name} is not JSON")


def decode_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError):
        raise JoseError(f"{what} is not a JSON object") from None
    if not isinstance(value, dict):
        raise JoseError(f"{what} is not a JSON object")
    return value


def decode_segment(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError:
        raise JoseError(f"{what} is not base64url") from None


def split_compact(token: str, count: int, what: str) -> list[str]:
    if len(token) > MAX_COMPACT_CHARS or not token.isascii():
        raise JoseError(f"not a compact {what}")
    parts = token.split(".")
    if len(parts) != count:
        raise JoseError(f"not a compact {what}")
    return parts


def check_header(header: dict[str, Any], kind: str, alg: str) -> str:
    """The header must name the configured algorithm and no extension; returns the alg."""
    if "crit" in header:
        # RFC 7515 §4.1.11: this profile understands no extension, so any crit is fatal.
        raise JoseError(f"{kind} header has unsupported critical parameters")
    named = header.get("alg")
    if named not in _SAME_ALGORITHM.get(alg, (alg,)):
        raise JoseError(f"unexpected {kind} alg (this partner uses {alg})")
    return alg


# -- keys ----------------------------------------------------------------------------------


def load_public_pem(pem: bytes, what: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BadRequest(f"{what} is not a PEM public key") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key
    raise BadRequest(f"{what} must be EC P-256, Ed25519 or RSA of at least {MIN_RSA_BITS} bits")


def signature_algorithm_for(public: PublicKey) -> str:
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ES256"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "EdDSA"
    return "PS256"


def key_management_for(public: PublicKey) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        return RSA_OAEP_256
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ECDH_ES_A256KW
    raise BadRequest("an Ed25519 key cannot be encrypted to")


# -- JWS -----------------------------------------------------------------------------------


def signing_input(header: dict[str, Any], payload: bytes) -> bytes:
    return f"{b64url(encode_json(header))}.{b64url(payload)}".encode("ascii")


def jws_header(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS (not yet verified: only to pick the key)."""
    header_b64 = split_compact(token, 3, "JWS")[0]
    return decode_json(decode_segment(header_b64, "JWS header"), "JWS header")


def verified_jws(token: str, keys: Sequence[tuple[PublicKey, str]]) -> VerifiedJws:
    """A compact JWS that one of ``keys`` (each a public key and the alg it signs with)
    signed, under the alg its header names, with what proves it; anything else fails.
    Several keys: a partner's keys overlap while it rotates them."""
    header_b64, payload_b64, signature_b64 = split_compact(token, 3, "JWS")
    header = decode_json(decode_segment(header_b64, "JWS header"), "JWS header")
    if not keys:
        raise JoseError("no signing key of the partner is valid now")
    named = header.get("alg")
    usable = [(public, alg) for public, alg in keys if named in _SAME_ALGORITHM.get(alg, (alg,))]
    check_header(header, "JWS", usable[0][1] if usable else keys[-1][1])
    if "b64" in header:
        raise JoseError("JWS header parameter b64 is not supported")  # RFC 7797
    signature = decode_segment(signature_b64, "JWS signature")
    message = f"{header_b64}.{payload_b64}".encode("ascii")
    if not any(_signed_by(public, alg, message, signature) for public, alg in usable):
        raise SignatureInvalid()
    return VerifiedJws(
        decode_segment(payload_b64, "JWS payload"),
        header_b64,
        hashlib.sha256(payload_b64.encode("ascii")).hexdigest(),
        signature_b64,
    )


def _signed_by(public: PublicKey, alg: str, message: bytes, signature: bytes) -> bool:
    try:
        if alg == "ES256" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(ecdsa_raw_to_der(signature), message, ec.ECDSA(hashes.SHA256()))
        elif alg == "EdDSA" and isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif alg == "PS256" and isinstance(public, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PS256_SALT_BYTES)
            public.verify(signature, message, pss, hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


# -- JWE -----------------------------------------------------------------------------------


def concat_kdf(z: bytes, alg: str, apu: bytes, apv: bytes) -> bytes:
    """RFC 7518 §4.6.2: NIST SP 800-56A Concat KDF with SHA-256; OtherInfo is AlgorithmID,
    PartyUInfo, PartyVInfo (each length-prefixed) and SuppPubInfo (the key length in bits)."""

    def framed(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    other_info = framed(alg.encode()) + framed(apu) + framed(apv) + struct.pack(">I", KEK_BITS)
    return ConcatKDFHash(hashes.SHA256(), KEK_BITS // 8, other_info).derive(z)


def _ec_point(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def epk_member(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(P256_COORDINATE_BYTES, "big")),
        "y": b64url(numbers.y.to_bytes(P256_COORDINATE_BYTES, "big")),
    }


def peer_point(header: dict[str, Any]) -> bytes:
    """The sender's ephemeral P-256 key from ``epk``, checked to be on the curve (an invalid
    point would leak bits of our private key), as an uncompressed SEC 1 point."""
    epk = header.get("epk")
    if not isinstance(epk, dict) or epk.get("kty") != "EC" or epk.get("crv") != "P-256":
        raise JoseError("JWE epk must be an EC P-256 public key")
    if "d" in epk:
        raise JoseError("JWE epk must be an EC P-256 public key")
    x, y = epk.get("x"), epk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise JoseError("JWE epk must be an EC P-256 public key")
    xb, yb = decode_segment(x, "epk x"), decode_segment(y, "epk y")
    if len(xb) != P256_COORDINATE_BYTES or len(yb) != P256_COORDINATE_BYTES:
        raise JoseError("JWE epk must be an EC P-256 public key")
    try:
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(xb, "big"), int.from_bytes(yb, "big"), ec.SECP256R1()
        ).public_key()
    except ValueError:
        raise JoseError("JWE epk is not a point on P-256") from None
    return _ec_point(public)


def party_info(header: dict[str, Any], name: str) -> bytes:
    value = header.get(name)
    if value is None:
        return b""
    if not isinstance(value, str):
        raise JoseError(f"JWE {name} must be base64url")
    return decode_segment(value, f"JWE {name}")


def unwrap_cek(kek: bytes, encrypted_key: bytes) -> bytes | None:
    try:
        return aes_key_unwrap(kek, encrypted_key)
    except (InvalidUnwrap, ValueError):
        return None


def wrap_cek(public: PublicKey, alg: str, cek: bytes) -> tuple[dict[str, Any], bytes]:
    """Encrypt the content key to a partner (public-key work only, on the host): the header
    members this adds and the JWE Encrypted Key."""
    if alg in OAEP_HASH and isinstance(public, rsa.RSAPublicKey):
        digest: hashes.HashAlgorithm = (
            hashes.SHA256() if alg == RSA_OAEP_256 else hashes.SHA1()  # noqa: S303 - RFC 7518 §4.3
        )
        oaep = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
        return {}, public.encrypt(cek, oaep)
    if alg == ECDH_ES_A256KW and isinstance(public, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        z = ephemeral.exchange(ec.ECDH(), public)
        kek = concat_kdf(z, alg, b"", b"")
        return {"epk": epk_member(ephemeral.public_key())}, aes_key_wrap(kek, cek)
    raise BadRequest(f"{alg} does not fit the partner's encryption key")


def encrypt_content(cek: bytes, iv: bytes, protected_b64: str, plaintext: bytes) -> bytes:
    """A256GCM with AAD = ASCII(BASE64URL(protected header)) (RFC 7516 §5.1 step 14);
    returns ciphertext || tag."""
    return AESGCM(cek).encrypt(iv, plaintext, protected_b64.encode("ascii"))


def decrypt_content(
    cek: bytes, iv: bytes, protected_b64: str, ciphertext: bytes, tag: bytes
) -> bytes | None:
    if len(iv) != IV_BYTES or len(tag) != TAG_BYTES or len(cek) != CEK_BYTES:
        return None
    try:
        return AESGCM(cek).decrypt(iv, ciphertext + tag, protected_b64.encode("ascii"))
    except InvalidTag:
        return None
