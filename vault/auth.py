"""Service authentication: JWTs signed by each service's own private key.

The vault holds only public keys (from the policies), several per service while it rolls its
key over; a token's ``kid``, when present, must name one of them (RFC 7638 thumbprint unless
configured). The algorithm is fixed by the key and the configuration, never taken from the
token's header. Before any signature work the request's source address must be one the
service's ``allow_from`` admits and, over mutual TLS, the client certificate's subject must
name the token's service. A verified token is then remembered until it expires; revocation
(``vault.tokens``) is checked on every request, cached or not.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.x509.oid import NameOID

from vault.errors import Unauthorized
from vault.policy import Policies, Service, ServiceKey
from vault.tokens import RevocationList

_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "jti"]
_CACHE_LIMIT = 10_000
MAX_JTI_CHARS = 256  # the width of the single-use and revocation ledgers' columns


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
            raise Unauthorized("unknown service")
        try:
            _admit(service, peer)  # before any signature work
            claims = self._claims(token, header, self._keys(service, header))
            return self._principal(service, claims, now)
        except Unauthorized as exc:
            exc.service = service.name
            raise

    def _keys(self, service: Service, header: dict[str, Any]) -> list[ServiceKey]:
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise Unauthorized("token algorithm not accepted")
        keys = service.keys
        if kid is not None:
            keys = tuple(k for k in keys if k.kid == kid)
            if not keys:
                raise Unauthorized("token names an unknown key id")
        matching = [k for k in keys if k.algorithm == alg]
        if not matching:
            raise Unauthorized("token algorithm not accepted")
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
        raise Unauthorized("token signature or claims invalid")

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


def _admit(service: Service, peer: Peer) -> None:
    """The service's network and mutual-TLS conditions (cheap: no signature work)."""
    if not service.admits(peer.address):
        raise Unauthorized("source address not allowed for this service")
    if peer.certificate is not None:
        if certificate_cn(peer.certificate) != service.certificate_cn:
            raise Unauthorized("client certificate does not match the token's service")
    elif service.client_cert_required:
        raise Unauthorized("client certificate required")
