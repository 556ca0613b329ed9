"""Sign and verify with HSM keys, the way Vault Transit does (docs/transit-reference.md §11-12).

The private-key operation happens in the HSM; hashing, the PKCS#1 DigestInfo and the
signature's marshaling happen on the host. Verification needs no secret: it runs on the host
with ``cryptography`` over the public key the HSM exported, cached per key version (a
version's key pair never changes).

Signature format: ``vault:v<N>:<base64>``; the body is standard base64 for
``marshaling_algorithm=asn1`` (ECDSA as a DER ``Ecdsa-Sig-Value``) and unpadded base64url for
``jws`` (ECDSA as raw ``r || s``, RFC 7518 §3.4), as in Vault.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from hsm import HsmOps, KeySpec, SignScheme
from vault.encoding import Versioned, b64url, b64url_decode, versioned
from vault.errors import BadRequest, VaultError
from vault.hsm import Hsm
from vault.keys import Key, KeyVersion
from vault.registry import KeyRegistry

PublicKey: TypeAlias = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

DEFAULT_HASH = "sha2-256"
# Vault's names → the hash (only the SHA-2 family the HSM's RSA-PSS parameters cover).
HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha2-256": hashes.SHA256,
    "sha2-384": hashes.SHA384,
    "sha2-512": hashes.SHA512,
}
_HSM_HASH_NAME = {"sha2-256": "sha256", "sha2-384": "sha384", "sha2-512": "sha512"}
# RFC 8017 §9.2 note 1: the DER DigestInfo prefix for each hash, for EMSA-PKCS1-v1_5.
_DIGEST_INFO_PREFIX = {
    "sha2-256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha2-384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha2-512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
P256_COORDINATE_BYTES = 32  # RFC 7518 §3.4: ES256's r and s are 32 bytes each
_PUBLIC_KEY_CACHE_LIMIT = 10_000

MARSHALING = ("asn1", "jws")
RSA_SIGNATURE_ALGORITHMS = ("pss", "pkcs1v15")


RSA_CALL_WEIGHT = 20


@dataclass(frozen=True, slots=True)
class SignOptions:
    """The request-level knobs of ``sign`` and ``verify`` (validated once per request)."""

    hash_algorithm: str = DEFAULT_HASH
    prehashed: bool = False
    signature_algorithm: str | None = None
    marshaling_algorithm: str = "asn1"
    salt_length: str | int | None = None

    def __post_init__(self) -> None:
        if self.hash_algorithm not in HASHES:
            raise BadRequest(f'invalid hash algorithm "{_short(self.hash_algorithm)}"')
        if self.marshaling_algorithm not in MARSHALING:
            raise BadRequest(f'invalid marshaling type "{_short(self.marshaling_algorithm)}"')


@dataclass(frozen=True, slots=True)
class Signed:
    signature: str
    key_version: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """How one key signs under one set of options."""

    scheme: SignScheme
    hash_name: str
    pss_salt: Any  # RSA-PSS only: a byte count or ``padding.PSS.AUTO`` (verify)

    @property
    def hash(self) -> hashes.HashAlgorithm:
        return HASHES[self.hash_name]()


def _short(text: str) -> str:
    return text[:32]


def require_signing(key: Key, operation: str) -> None:
    """A key of a type that signs, made for signing (``operation``: sign or verify)."""
    if not key.type.signing:
        raise BadRequest(f"key type {key.type.name} does not support signing")
    key.check_use(operation)


def jws_algorithm(key: Key) -> str:
    """The JWS ``alg`` this signing key signs with by default (RFC 7518 §3.1, RFC 8037 §3.1)."""
    return {KeySpec.EC_P256: "ES256", KeySpec.ED25519: "EdDSA", KeySpec.RSA3072: "PS256"}[key.spec]


def _plan(key: Key, options: SignOptions, *, signing: bool) -> _Plan:
    spec = key.spec
    hash_name = options.hash_algorithm
    if spec is KeySpec.ED25519:
        # Ed25519 signs the message itself; Vault (OpenBao 2.7) ignores hash and prehashed.
        return _Plan(SignScheme.EDDSA, DEFAULT_HASH, 0)
    if spec is KeySpec.EC_P256:
        return _Plan(SignScheme.ECDSA, hash_name, 0)
    algorithm = options.signature_algorithm or "pss"
    if algorithm not in RSA_SIGNATURE_ALGORITHMS:
        raise BadRequest(f"unsupported rsa signature algorithm {_short(algorithm)}")
    if algorithm == "pkcs1v15":
        return _Plan(SignScheme.RSA_PKCS1V15, hash_name, 0)
    digest_size = HASHES[hash_name]().digest_size
    salt = options.salt_length
    if signing:
        # RFC 8017 §9.1 note 4 / RFC 7518 §3.5: the salt is as long as the hash. The HSM's
        # PSS parameters fix it so; "auto" verifiers (Vault's default) accept it.
        if salt not in (None, "auto", "hash", digest_size, str(digest_size)):
            raise BadRequest("salt_length must be 'auto', 'hash' or the hash length")
        return _Plan(SignScheme.RSA_PSS, hash_name, digest_size)
    if salt in (None, "auto"):
        return _Plan(SignScheme.RSA_PSS, hash_name, padding.PSS.AUTO)
    if salt == "hash":
        return _Plan(SignScheme.RSA_PSS, hash_name, digest_size)
    try:
        value = int(salt)
    except ValueError:
        raise BadRequest("salt_length must be 'auto', 'hash' or a number of bytes") from None
    if value < 0:
        raise BadRequest("salt_length must be 'auto', 'hash' or a number of bytes")
    return _Plan(SignScheme.RSA_PSS, hash_name, value)


def _digest(plan: _Plan, data: bytes, prehashed: bool) -> bytes:
    size = HASHES[plan.hash_name]().digest_size
    if prehashed:
        if len(data) != size:
            raise BadRequest(f"prehashed input must be a {plan.hash_name} digest ({size} bytes)")
        return data
    return hashlib.new(_HSM_HASH_NAME[plan.hash_name], data).digest()


def hsm_input(plan: _Plan, data: bytes, prehashed: bool) -> bytes:
    """What the HSM's mechanism takes: the message (EdDSA), the digest (ECDSA, PSS), or
    the DER DigestInfo (PKCS#1 v1.5 over CKM_RSA_PKCS)."""
    if plan.scheme is SignScheme.EDDSA:
        return data
    digest = _digest(plan, data, prehashed)
    if plan.scheme is SignScheme.RSA_PKCS1V15:
        return _DIGEST_INFO_PREFIX[plan.hash_name] + digest
    return digest


def _marshal(plan: _Plan, raw: bytes, marshaling: str) -> str:
    if plan.scheme is SignScheme.ECDSA and marshaling == "asn1":
        half = len(raw) // 2
        raw = encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )
    if marshaling == "jws":
        return b64url(raw)
    return base64.b64encode(raw).decode()


def ecdsa_der_to_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(P256_COORDINATE_BYTES, "big") + s.to_bytes(P256_COORDINATE_BYTES, "big")


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    if len(raw) != 2 * P256_COORDINATE_BYTES:
        raise ValueError("an ES256 signature is 64 bytes")
    half = P256_COORDINATE_BYTES
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


class PublicKeys:
    """Public keys exported from the HSM once per key version, then served from memory."""

    def __init__(self, hsm: Hsm) -> None:
        self._hsm = hsm
        self._cache: dict[bytes, PublicKey] = {}

    async def of(self, versions: Sequence[KeyVersion]) -> dict[int, PublicKey]:
        missing = [v.object_id() for v in versions if v.object_id() not in self._cache]
        if missing:

            def job(ops: HsmOps) -> list[bytes]:
                return [ops.public_key_der(oid) for oid in missing]

            ders = await self._hsm.run(job)
            if len(self._cache) + len(missing) > _PUBLIC_KEY_CACHE_LIMIT:
                self._cache.clear()
            for oid, der in zip(missing, ders, strict=True):
                loaded = serialization.load_der_public_key(der)
                if not isinstance(
                    loaded, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
                ):
                    raise BadRequest("unsupported public key type")
                self._cache[oid] = loaded
        return {v.version: self._cache[v.object_id()] for v in versions}

    async def one(self, version: KeyVersion) -> PublicKey:
        return (await self.of([version]))[version.version]


def _verify_with(
    public: PublicKey, plan: _Plan, options: SignOptions, data: bytes, signature: bytes
) -> bool:
    try:
        if isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
            return True
        digest = _digest(plan, data, options.prehashed)
        prehashed = Prehashed(plan.hash)
        if isinstance(public, ec.EllipticCurvePublicKey):
            if options.marshaling_algorithm == "jws":
                signature = ecdsa_raw_to_der(signature)
            public.verify(signature, digest, ec.ECDSA(prehashed))
            return True
        if plan.scheme is SignScheme.RSA_PKCS1V15:
            public.verify(signature, digest, padding.PKCS1v15(), prehashed)
        else:
            pss = padding.PSS(mgf=padding.MGF1(plan.hash), salt_length=plan.pss_salt)
            public.verify(signature, digest, pss, prehashed)
        return True
    except (InvalidSignature, ValueError):
        return False


def _decode_body(body: str, marshaling: str) -> bytes:
    try:
        if marshaling == "jws":
            return b64url_decode(body)
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("invalid base64 signature value") from None


@dataclass(frozen=True, slots=True)
class VerifyItem:
    input: bytes
    signature: str


class Signer:
    """Sign (in the HSM) and verify (on the host) for named keys."""

    def __init__(self, registry: KeyRegistry, hsm: Hsm) -> None:
        self.registry = registry
        self.hsm = hsm
        self.public_keys = PublicKeys(hsm)

    async def signing_key(self, name: str, operation: str, newest: int | None = None) -> Key:
        key = await self.registry.get(name, newest=newest)
        require_signing(key, operation)
        return key

    async def sign(
        self,
        name: str,
        inputs: Sequence[bytes | VaultError],
        options: SignOptions,
        key_version: int | None = None,
    ) -> list[Signed | VaultError]:
        """Sign each input with one version (the whole batch is one HSM job)."""
        key = await self.signing_key(name, "sign", key_version)
        version = key.version_to_use(key_version)
        plan = _plan(key, options, signing=True)
        prepared: list[bytes | VaultError] = []
        for item in inputs:
            if isinstance(item, VaultError):
                prepared.append(item)
                continue
            try:
                prepared.append(hsm_input(plan, item, options.prehashed))
            except VaultError as exc:
                prepared.append(exc)
        todo = [p for p in prepared if isinstance(p, bytes)]
        # An RSA-3072 private-key operation takes about as long as 20 AES ones: never inline.
        weight = len(todo) * (RSA_CALL_WEIGHT if key.spec is KeySpec.RSA3072 else 1)
        job = sign_job(version.object_id(), plan, todo)
        raws = await self.hsm.run(job, calls=weight) if todo else []
        it = iter(raws)
        out: list[Signed | VaultError] = []
        for p in prepared:
            if isinstance(p, VaultError):
                out.append(p)
                continue
            encoded = _marshal(plan, next(it), options.marshaling_algorithm)
            out.append(Signed(versioned(version.version, encoded), version.version))
        return out

    async def verify(
        self, name: str, items: Sequence[VerifyItem | VaultError], options: SignOptions
    ) -> list[bool | VaultError]:
        values: list[Versioned | VaultError] = []
        for item in items:
            try:
                values.append(
                    item
                    if isinstance(item, VaultError)
                    else Versioned.parse(item.signature, "signature")
                )
            except VaultError as exc:
                values.append(exc)
        newest = max((v.version for v in values if isinstance(v, Versioned)), default=None)
        key = await self.signing_key(name, "verify", newest)
        plan = _plan(key, options, signing=False)
        parsed: list[tuple[KeyVersion, bytes, bytes] | VaultError] = []
        for item, value in zip(items, values, strict=True):
            if isinstance(value, VaultError):
                parsed.append(value)
                continue
            assert isinstance(item, VerifyItem)
            try:
                version = key.version_to_check(value.version)
                body = _decode_body(value.body, options.marshaling_algorithm)
                parsed.append((version, item.input, body))
            except VaultError as exc:
                parsed.append(exc)
        needed = {p[0].version: p[0] for p in parsed if not isinstance(p, VaultError)}
        publics = await self.public_keys.of(list(needed.values()))
        out: list[bool | VaultError] = []
        for p in parsed:
            if isinstance(p, VaultError):
                out.append(p)
                continue
            version, data, signature = p
            try:
                out.append(_verify_with(publics[version.version], plan, options, data, signature))
            except VaultError as exc:
                out.append(exc)
        return out

    async def jwks(self, name: str) -> dict[str, Any]:
        """A JWK Set (RFC 7517 §5) of every usable version's public key, for verifiers that
        never talk to the vault."""
        key = await self.signing_key(name, "verify")
        versions = key.live_versions()
        publics = await self.public_keys.of(versions)
        alg = jws_algorithm(key)
        return {
            "keys": [
                public_jwk(publics[v.version], kid=f"{key.name}:v{v.version}", alg=alg, use="sig")
                for v in versions
            ]
        }


def sign_job(object_id: bytes, plan: _Plan, inputs: Sequence[bytes]):  # type: ignore[no-untyped-def]
    """A job signing prepared inputs with one HSM key; each result is the mechanism's raw output
    (ECDSA: ``r || s``)."""
    hsm_hash = _HSM_HASH_NAME[plan.hash_name]

    def job(ops: HsmOps) -> list[bytes]:
        return [ops.sign(object_id, plan.scheme, data, hsm_hash) for data in inputs]

    return job


def plan_for_jws(key: Key) -> _Plan:
    """The plan for this key's default JWS algorithm (ES256 / EdDSA / PS256)."""
    return _plan(key, SignOptions(), signing=True)


def public_jwk(public: PublicKey, *, kid: str, alg: str, use: str) -> dict[str, str]:
    """RFC 7517 / RFC 7518 §6 / RFC 8037 §2 members for one public key."""
    jwk: dict[str, str]
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(P256_COORDINATE_BYTES, "big")),
            "y": b64url(numbers.y.to_bytes(P256_COORDINATE_BYTES, "big")),
        }
    elif isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    else:
        rsa_numbers = public.public_numbers()
        jwk = {
            "kty": "RSA",
            "n": b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        }
    return {**jwk, "kid": kid, "alg": alg, "use": use}
