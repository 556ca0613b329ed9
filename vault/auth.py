"""Service authentication: JWTs signed by each service's own private key.

The vault holds only public keys (from the policies). The algorithm is fixed by the
service's key type and the configuration, never taken from the token's header.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from vault.errors import Unauthorized
from vault.policy import Policies, Service

_PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "jti"]
_CACHE_LIMIT = 10_000
# Every refusal before a signature is known good reads the same: no service enumeration.
_NOT_VERIFIED = "token signature or claims invalid"


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


@dataclass(frozen=True, slots=True)
class Principal:
    service: Service
    token_id: str
    expires_at: float


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
    ) -> None:
        self._policies = policies
        self._audience = audience
        self._algorithms = algorithms
        self._max_lifetime = max_lifetime
        self._leeway = leeway
        self._cache: dict[bytes, Principal] = {}
        self._decoys = {a: _decoy_key(a) for a in algorithms}

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthorized("missing service token")
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        now = time.time()
        if cached is not None:
            if now < cached.expires_at:
                return cached
            del self._cache[digest]
        principal = self._verify(token, now)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = principal
        return principal

    def _verify(self, token: str, now: float) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        subject = unverified.get("sub")
        service = self._policies.service(subject) if isinstance(subject, str) else None
        if (
            service is None
            or service.public_key is None
            or service.algorithm not in self._algorithms
            or header.get("alg") != service.algorithm
        ):
            # Whether the service exists, and which algorithm its key has, shows neither in
            # the answer nor in its timing: a signature is checked here too (against a key
            # nobody holds), and the refusal reads as a bad signature does.
            self._decoy_check(token, header.get("alg"))
            raise Unauthorized(_NOT_VERIFIED)
        try:
            claims = jwt.decode(
                token,
                key=service.public_key,
                algorithms=[service.algorithm],
                audience=self._audience,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise Unauthorized(_NOT_VERIFIED) from None
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if exp - iat > self._max_lifetime:
            raise Unauthorized("token lifetime exceeds the configured maximum")
        if iat > now + self._leeway:
            raise Unauthorized("token issued in the future")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("token lacks the jti claim")
        return Principal(service, jti, exp)

    def _decoy_check(self, token: str, alg: object) -> None:
        algorithm = alg if isinstance(alg, str) and alg in self._decoys else self._algorithms[0]
        with contextlib.suppress(jwt.PyJWTError):
            jwt.decode(token, key=self._decoys[algorithm], algorithms=[algorithm], audience="-")
