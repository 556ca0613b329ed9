"""Service authentication: JWTs signed by each service's own private key.

The vault holds only public keys (from the policies), several per service while it rolls its
key over; a token's ``kid``, when present, must name one of them (RFC 7638 thumbprint unless
configured). The algorithm is fixed by the key and the configuration, never taken from the
token's header. Before any signature work the request's source address must be one the
service's ``allow_from`` admits and, over mutual TLS, the client certificate's subject must
name the token's service. A verified token is then remembered until it expires; revocation
(``vault.tokens``) is checked on every request, cached or not.

Whether a service exists, which keys and algorithms it has, and whether a source address
is allowed show neither in a refusal nor in its timing: every refusal before a signature is
known good reads the same, and costs a signature check (against a key nobody holds where
the service has none to check).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from vault.errors import Unauthorized
from vault.policy import Policies, Service, ServiceKey
from vault.tokens import RevocationList

_PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "jti"]
_CACHE_LIMIT = 10_000
MAX_JTI_CHARS = 256  # the width of the single-use and revocation ledgers' columns
# Every refusal before a signature is known good reads the same: no service enumeration.
NOT_VERIFIED = "token signature or claims invalid"


def _decoy_key(algorithm: str) -> _PublicKey:
    """A public key of ``algorithm``'s kind whose private half is thrown away at once."""
    private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm.startswith("ES"):
        curve = ec.SECP384R1() if algorithm == "ES384" else ec.SECP256R1()
        private = ec.generate_private_key(curve)
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private.public_key()


class NotVerified(Unauthorized):
    """A refusal before any signature verified. The caller sees the one message
    (``NOT_VERIFIED``); ``reason`` says which condition failed, for the audit trail."""

    def __init__(self, reason: str) -> None:
        super().__init__(NOT_VERIFIED)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Principal:
    service: Service
    token_id: str
    expires_at: float
    issued_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a request came from: its source address and, over mutual TLS, the client's
    certificate (PEM, leaf first: the ASGI TLS extension's ``client_cert_chain[0]``)."""

    address: str = ""
    certificate: str | None = None


ANYWHERE = Peer()


@functools.lru_cache(maxsize=1024)
def certificate_cn(pem: str) -> str | None:
    """The subject common name of a client certificate (None if it has none or is unreadable)."""
    try:
        names = x509.load_pem_x509_certificate(pem.encode()).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
    except ValueError:
        return None
    return str(names[0].value) if len(names) == 1 else None


class Authenticator:
    """Verifies tokens; a verified token is remembered (by its digest) until it expires,
    so a client that sends one token for many calls pays for one signature check."""

    def __init__(
        self,
        policies: Policies,
        *,
        audience: str,
        algorithms: tuple[str, ...],
        max_lifetime: int,
        leeway: int,
        revocations: RevocationList,
    ) -> None:
        self._policies = policies
        self._audience = audience
        self._algorithms = algorithms
        self._max_lifetime = max_lifetime
        self._leeway = leeway
        self._revocations = revocations
        self._cache: dict[bytes, Principal] = {}
        self._decoys = {a: _decoy_key(a) for a in algorithms}

    async def authenticate(self, token: str | None, peer: Peer = ANYWHERE) -> Principal:
        if not token:
            raise Unauthorized("missing service token")
        await self._revocations.fresh()
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        now = time.time()
        if cached is not None and now < cached.expires_at:
            principal = cached
            try:
                _admit(principal.service, peer)
            except Unauthorized as exc:
                exc.service = principal.service.name
                raise
        else:
            if cached is not None:
                del self._cache[digest]
            principal = self._verify(token, now, peer)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = principal
        self._revocations.check(principal)
        return principal

    def _verify(self, token: str, now: float, peer: Peer) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        subject = unverified.get("sub")
        service = self._policies.service(subject) if isinstance(subject, str) else None
        if service is None or not service.keys:
            self._decoy_check(token, header.get("alg"))
            raise NotVerified("unknown service")
        try:
            _admit(service, peer)  # before any signature work: refused without one
            try:
                keys = self._keys(service, header)
            except NotVerified:
                # No key of the service fits: a decoy check, so that the refusal costs what
                # a bad signature costs.
                self._decoy_check(token, header.get("alg"))
                raise
            claims = self._claims(token, header, keys)
            return self._principal(service, claims, now)
        except Unauthorized as exc:
            exc.service = service.name
            raise

    def _keys(self, service: Service, header: dict[str, Any]) -> list[ServiceKey]:
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise NotVerified("token algorithm not accepted")
        keys = service.keys
        if kid is not None:
            keys = tuple(k for k in keys if k.kid == kid)
            if not keys:
                raise NotVerified("token names an unknown key id")
        matching = [k for k in keys if k.algorithm == alg]
        if not matching:
            raise NotVerified("token algorithm not accepted")
        return matching

    def _claims(self, token: str, header: dict[str, Any], keys: list[ServiceKey]) -> Any:
        """Try each candidate key; an error other than a bad signature came after one key's
        signature verified, and is the answer."""
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key=key.public_key,
                    algorithms=[key.algorithm],
                    audience=self._audience,
                    leeway=self._leeway,
                    options={"require": _REQUIRED_CLAIMS, "verify_signature": True},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthorized("token expired") from None
            except jwt.InvalidAudienceError:
                raise Unauthorized("token audience not accepted") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthorized(f"token lacks the {exc.claim} claim") from None
            except jwt.PyJWTError:
                break
        raise Unauthorized(NOT_VERIFIED)

    def _principal(self, service: Service, claims: Any, now: float) -> Principal:
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if exp - iat > self._max_lifetime:
            raise Unauthorized("token lifetime exceeds the configured maximum")
        if iat > now + self._leeway:
            raise Unauthorized("token issued in the future")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("token lacks the jti claim")
        if len(jti) > MAX_JTI_CHARS:
            raise Unauthorized(f"token jti longer than {MAX_JTI_CHARS} characters")
        return Principal(service, jti, exp, iat)

    def _decoy_check(self, token: str, alg: object) -> None:
        algorithm = alg if isinstance(alg, str) and alg in self._decoys else self._algorithms[0]
        with contextlib.suppress(jwt.PyJWTError):
            jwt.decode(token, key=self._decoys[algorithm], algorithms=[algorithm], audience="-")


def _admit(service: Service, peer: Peer) -> None:
    """The service's network and mutual-TLS conditions (cheap: no signature work)."""
    if not service.admits(peer.address):
        raise NotVerified("source address not allowed for this service")
    if peer.certificate is not None:
        if certificate_cn(peer.certificate) != service.certificate_cn:
            raise NotVerified("client certificate does not match the token's service")
    elif service.client_cert_required:
        raise NotVerified("client certificate required")
