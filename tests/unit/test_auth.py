"""Service tokens: every known way to forge or stretch a JWT is refused with ``Unauthorized``;
a valid token is verified once and then served from the cache until it expires."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.certs import issue
from vault.auth import ANYWHERE, NOT_VERIFIED, Authenticator, NotVerified, Peer, Principal
from vault.errors import Unauthorized
from vault.policy import Policies, load_policies
from vault.store import Database, make_engine, migrate
from vault.store.tokens import RevocationStore
from vault.tokens import RevocationList

AUDIENCE = "hsm-vault"
MAX_LIFETIME = 3600
LEEWAY = 30

ALPHA = ed25519.Ed25519PrivateKey.generate()  # service "alpha" (EdDSA)
BETA = ed25519.Ed25519PrivateKey.generate()  # service "beta" (EdDSA)
GAMMA = ec.generate_private_key(ec.SECP256R1())  # service "gamma" (ES256)
ATTACKER_ED = ed25519.Ed25519PrivateKey.generate()
ATTACKER_P256 = ec.generate_private_key(ec.SECP256R1())
ATTACKER_P384 = ec.generate_private_key(ec.SECP384R1())
ATTACKER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_test_policies(tmp_path: Path) -> Policies:
    directory = tmp_path / "policies"
    directory.mkdir()
    (tmp_path / "var").mkdir()
    text = ""
    for name, key in (("alpha", ALPHA), ("beta", BETA), ("gamma", GAMMA)):
        text += (
            f"[services.{name}]\n"
            f'public_key = """{public_pem(key).decode()}"""\n'
            'grants = [{ keys = ["*"], operations = ["encrypt"] }]\n'
        )
    # A dev service whose key pair `make run` has not generated yet: no key, no tokens.
    text += '[services.keyless]\ndev = true\npublic_key_file = "{var}/nowhere.pem"\n'
    (directory / "services.toml").write_text(text)
    return load_policies(directory, tmp_path / "var")


@pytest.fixture
def policies(tmp_path: Path) -> Policies:
    return load_test_policies(tmp_path)


@pytest.fixture
def revocations(tmp_path: Path) -> RevocationList:
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    migrate(make_engine(url))
    return RevocationList(RevocationStore(Database.open(url)))


def make_auth(policies: Policies, revocations: RevocationList, **changes: Any) -> Authenticator:
    options: dict[str, Any] = {
        "audience": AUDIENCE,
        "algorithms": ("EdDSA", "ES256"),
        "max_lifetime": MAX_LIFETIME,
        "leeway": LEEWAY,
    }
    return Authenticator(policies, revocations=revocations, **(options | changes))


@pytest.fixture
def auth(policies: Policies, revocations: RevocationList) -> Authenticator:
    return make_auth(policies, revocations)


def authenticate(auth: Authenticator, presented: str | None, peer: Peer = ANYWHERE) -> Principal:
    return asyncio.run(auth.authenticate(presented, peer))


_DROP = object()


def claims(sub: Any = "alpha", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": sub,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not _DROP}


def token(
    body: dict[str, Any] | None = None,
    key: Any = ALPHA,
    algorithm: str = "EdDSA",
    headers: dict[str, Any] | None = None,
) -> str:
    return jwt.encode(body if body is not None else claims(), key, algorithm, headers=headers)


def forge(header: dict[str, Any], body: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWS put together by hand, for what pyjwt refuses to make."""
    signing_input = (
        f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}".encode()
    )
    return f"{signing_input.decode()}.{b64url(sign(signing_input))}"


def refused(auth: Authenticator, presented: str | None) -> str:
    """Why ``presented`` is refused: the message, or for a refusal before any signature
    verified (the one message callers see) the reason kept for the audit trail."""
    with pytest.raises(Unauthorized) as caught:
        authenticate(auth, presented)
    if presented:
        digest = hashlib.sha256(presented.encode()).digest()
        assert digest not in auth._cache, "a refused token must never be cached"
    if isinstance(caught.value, NotVerified):
        assert str(caught.value) == NOT_VERIFIED
        return caught.value.reason
    return str(caught.value)


def es256_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


# -- the attacks --------------------------------------------------------------------------


@pytest.mark.parametrize("presented", [None, ""])
def test_no_token(auth: Authenticator, presented: str | None) -> None:
    assert "missing" in refused(auth, presented)


@pytest.mark.parametrize(
    "presented",
    [
        "garbage",
        "a.b.c",
        "..",
        "eyJhbGciOiJFZERTQSJ9",
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbHBoYSJ9",
        "\u00e9t\u00e9.\u00e9t\u00e9.\u00e9t\u00e9",
        "x" * 5000,
    ],
)
def test_garbage(auth: Authenticator, presented: str) -> None:
    refused(auth, presented)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(auth: Authenticator, alg: str) -> None:
    header = {"alg": alg, "typ": "JWT"}
    refused(auth, forge(header, claims(), lambda _: b""))
    # ... also with a signature segment left over from a real token.
    real_signature = token().rsplit(".", 1)[1]
    unsigned = forge(header, claims(), lambda _: b"").rsplit(".", 1)[0]
    refused(auth, f"{unsigned}.{real_signature}")


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
@pytest.mark.parametrize("service", ["alpha", "gamma"])
def test_hmac_signed_with_the_public_key_pem(auth: Authenticator, alg: str, service: str) -> None:
    """Algorithm confusion: the public key (which anyone may know) used as an HMAC secret."""
    pem = public_pem(ALPHA if service == "alpha" else GAMMA)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    for secret in (pem, pem.strip()):
        forged = forge(
            {"alg": alg, "typ": "JWT"},
            claims(service),
            lambda data, s=secret: hmac.new(s, data, digest).digest(),  # type: ignore[misc]
        )
        refused(auth, forged)


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (ATTACKER_RSA, "RS256"),
        (ATTACKER_RSA, "PS256"),
        (ATTACKER_P384, "ES384"),
        (ATTACKER_P256, "ES256"),
        (ATTACKER_ED, "EdDSA"),
    ],
)
@pytest.mark.parametrize("service", ["alpha", "gamma"])
def test_signed_with_another_key(
    auth: Authenticator, key: Any, algorithm: str, service: str
) -> None:
    refused(auth, token(claims(service), key, algorithm))


def test_es256_service_refuses_eddsa_and_eddsa_service_refuses_es256(auth: Authenticator) -> None:
    """Even a right-looking signature by the right kind of key for the wrong algorithm."""
    refused(auth, token(claims("gamma"), ALPHA, "EdDSA"))
    refused(auth, token(claims("alpha"), GAMMA, "ES256"))


def test_kid_for_a_key_that_does_not_exist_is_refused(auth: Authenticator) -> None:
    """A kid must name one of the service's keys: even a genuine signature under an unknown
    kid is refused, and an attacker's key is refused whatever kid it claims."""
    headers = {"kid": "attacker-key-2024"}
    assert "unknown key id" in refused(auth, token(claims(), ALPHA, headers=headers))
    refused(auth, token(claims(), ATTACKER_ED, headers=headers))
    own = auth._policies.services["alpha"].keys[0].kid
    assert authenticate(auth, token(claims(), ALPHA, headers={"kid": own})).service.name == "alpha"
    refused(auth, token(claims(), ATTACKER_ED, headers={"kid": own}))


@pytest.mark.parametrize("field", ["jwk", "jku", "x5u"])
def test_key_embedded_or_referenced_in_the_header_is_ignored(
    auth: Authenticator, field: str
) -> None:
    attacker_jwk = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(
            ATTACKER_ED.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        ),
    }
    value: Any = attacker_jwk if field == "jwk" else "https://attacker.example/keys.json"
    refused(auth, token(claims(), ATTACKER_ED, headers={field: value}))


def test_signature_of_another_token(auth: Authenticator) -> None:
    genuine = token()
    other_body = token(claims(jti="other")).split(".")[1]
    header, _, signature = genuine.split(".")
    refused(auth, f"{header}.{other_body}.{signature}")


def test_es256_with_a_bit_flipped(auth: Authenticator) -> None:
    good = forge({"alg": "ES256", "typ": "JWT"}, claims("gamma"), lambda d: es256_raw(GAMMA, d))
    assert authenticate(auth, good).service.name == "gamma"
    head, body, signature = good.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[10] ^= 1
    refused(auth, f"{head}.{body}.{b64url(bytes(raw))}")


@pytest.mark.parametrize("aud", ["other-vault", "", ["other-vault"], "HSM-VAULT"])
def test_wrong_audience(auth: Authenticator, aud: Any) -> None:
    refused(auth, token(claims(aud=aud)))


def test_missing_audience(auth: Authenticator) -> None:
    assert "aud" in refused(auth, token(claims(aud=_DROP)))


@pytest.mark.parametrize("field", ["exp", "iat", "jti", "sub"])
def test_missing_claim(auth: Authenticator, field: str) -> None:
    refused(auth, token(claims(**{field: _DROP})))


def test_expired(auth: Authenticator) -> None:
    now = int(time.time())
    assert "expired" in refused(auth, token(claims(iat=now - 600, exp=now - LEEWAY - 5)))


@pytest.mark.parametrize("exp", ["tomorrow", None, [1], {"at": 1}])
def test_exp_not_a_number(auth: Authenticator, exp: Any) -> None:
    refused(auth, token(claims(exp=exp)))


def test_lifetime_over_the_maximum(auth: Authenticator) -> None:
    now = int(time.time())
    assert "lifetime" in refused(auth, token(claims(iat=now, exp=now + MAX_LIFETIME + 1)))
    # Backdating iat to stay fresh-looking does not help either.
    refused(auth, token(claims(iat=now - MAX_LIFETIME, exp=now + 60)))
    # Exactly the maximum is fine.
    assert authenticate(auth, token(claims(iat=now, exp=now + MAX_LIFETIME)))


def test_issued_in_the_future(auth: Authenticator) -> None:
    now = int(time.time())
    refused(auth, token(claims(iat=now + LEEWAY + 60, exp=now + LEEWAY + 120)))


def test_not_before_in_the_future(auth: Authenticator) -> None:
    now = int(time.time())
    refused(auth, token(claims(nbf=now + LEEWAY + 60)))


@pytest.mark.parametrize("jti", ["", 123, None, ["a"]])
def test_jti_not_a_string(auth: Authenticator, jti: Any) -> None:
    refused(auth, token(claims(jti=jti)))


@pytest.mark.parametrize("sub", ["nobody", "", "ALPHA", "alpha ", 123, None, ["alpha"]])
def test_unknown_or_malformed_subject(auth: Authenticator, sub: Any) -> None:
    refused(auth, token(claims(sub)))


def test_a_service_name_cannot_be_confirmed(auth: Authenticator) -> None:
    """Whether a service exists, has a key, or signs with another algorithm reads exactly as
    a bad signature of a known service does, and costs a signature check too."""

    def answer(auth: Authenticator, presented: str) -> str:
        with pytest.raises(Unauthorized) as caught:
            authenticate(auth, presented)
        return str(caught.value)  # what the caller sees

    known_bad_signature = answer(auth, token(claims("alpha"), ATTACKER_ED))
    answers = {
        answer(auth, token(claims("nobody"), ATTACKER_ED)),
        answer(auth, token(claims(""), ATTACKER_ED)),
        answer(auth, token(claims("keyless"), ATTACKER_ED)),
        answer(auth, token(claims("gamma"), ATTACKER_ED)),  # an ES256 service, EdDSA token
        answer(auth, token(claims("alpha"), ATTACKER_P256, "ES256")),
        answer(auth, token(claims("nobody"), ATTACKER_P256, "ES256")),
    }
    assert answers == {known_bad_signature}
    assert "nobody" not in known_bad_signature
    assert "service" not in known_bad_signature


def test_an_unknown_service_costs_a_signature_check(
    auth: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = jwt.decode

    def counting(token: str, key: Any = None, **kwargs: Any) -> Any:
        if kwargs.get("options", {}).get("verify_signature", True):
            checked.append(token)
        return real(token, key, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    for sub in ("alpha", "nobody", "keyless", "gamma"):
        refused(auth, token(claims(sub), ATTACKER_ED))
    assert len(checked) == 4


def test_service_without_a_public_key(auth: Authenticator) -> None:
    refused(auth, token(claims("keyless"), ATTACKER_ED))


def test_signed_by_one_service_claiming_another(auth: Authenticator) -> None:
    refused(auth, token(claims("beta"), ALPHA))
    refused(auth, token(claims("alpha"), BETA))
    refused(auth, token(claims("gamma"), ALPHA))


def test_unsupported_critical_header(auth: Authenticator) -> None:
    refused(auth, token(headers={"crit": ["urn:example:must-understand"]}))


def test_algorithm_not_configured(policies: Policies, revocations: RevocationList) -> None:
    only_es256 = make_auth(policies, revocations, algorithms=("ES256",))
    refused(only_es256, token(claims("alpha"), ALPHA))
    assert authenticate(only_es256, token(claims("gamma"), GAMMA, "ES256")).service.name == "gamma"


def test_other_audience_when_configured(policies: Policies, revocations: RevocationList) -> None:
    custom = make_auth(
        policies, revocations, audience="vault-eu", algorithms=("EdDSA",), max_lifetime=60, leeway=0
    )
    refused(custom, token())
    now = int(time.time())
    assert authenticate(custom, token(claims(aud="vault-eu", exp=now + 60)))


# -- valid tokens and the cache -----------------------------------------------------------


def test_valid_tokens(auth: Authenticator) -> None:
    body = claims("alpha")
    principal = authenticate(auth, token(body))
    assert principal.service.name == "alpha"
    assert principal.token_id == body["jti"]
    assert principal.expires_at == body["exp"]
    assert authenticate(auth, token(claims("gamma"), GAMMA, "ES256")).service.name == "gamma"
    assert authenticate(auth, token(claims("beta"), BETA)).service.name == "beta"


def test_expired_within_leeway_is_still_accepted(auth: Authenticator) -> None:
    now = int(time.time())
    assert authenticate(auth, token(claims(iat=now - 100, exp=now - LEEWAY + 10)))


def test_a_valid_token_is_verified_once_then_cached(auth: Authenticator) -> None:
    presented = token()
    first = authenticate(auth, presented)
    assert auth._cache == {hashlib.sha256(presented.encode()).digest(): first}
    # Take every service away: re-verifying would now fail, so success proves the cache.
    auth._policies = Policies()
    assert authenticate(auth, presented) is first
    refused_fresh = token()
    with pytest.raises(Unauthorized):
        authenticate(auth, refused_fresh)


def test_a_cached_token_is_verified_again_once_it_expires(auth: Authenticator) -> None:
    presented = token()
    digest = hashlib.sha256(presented.encode()).digest()
    first = authenticate(auth, presented)
    auth._cache[digest] = replace(first, expires_at=time.time() - 1)
    again = authenticate(auth, presented)
    assert again is not first
    assert again == first  # verified afresh, same claims
    assert auth._cache[digest] is again
    # And once it cannot be verified any more, the stale entry is gone for good.
    auth._cache[digest] = replace(first, expires_at=time.time() - 1)
    auth._policies = Policies()
    with pytest.raises(Unauthorized):
        authenticate(auth, presented)
    assert digest not in auth._cache


# -- several keys, allowlists, mutual TLS, revocation --------------------------------------

ROLLED = ed25519.Ed25519PrivateKey.generate()  # alpha's next key


def trusting_policies(tmp_path: Path) -> Policies:
    directory = tmp_path / "trust-policies"
    directory.mkdir()
    (directory / "services.toml").write_text(
        "[services.alpha]\n"
        f'public_keys = ["""{public_pem(ALPHA).decode()}""", '
        f'{{ pem = """{public_pem(ROLLED).decode()}""", kid = "next" }}]\n'
        'allow_from = ["10.0.0.0/8"]\n'
        "client_cert_required = false\n"
        "[services.beta]\n"
        f'public_key = """{public_pem(BETA).decode()}"""\n'
        "client_cert_required = true\n"
    )
    return load_policies(directory, tmp_path)


@pytest.fixture
def trusting(tmp_path: Path, revocations: RevocationList) -> Authenticator:
    return make_auth(trusting_policies(tmp_path), revocations)


INSIDE, OUTSIDE = Peer("10.1.2.3"), Peer("192.0.2.1")


def test_a_service_rolls_its_key_over(trusting: Authenticator) -> None:
    assert authenticate(trusting, token(claims(), ALPHA), INSIDE).service.name == "alpha"
    assert authenticate(trusting, token(claims(), ROLLED), INSIDE).service.name == "alpha"
    assert authenticate(trusting, token(claims(), ROLLED, headers={"kid": "next"}), INSIDE)
    # The kid names the key: a right signature under the other kid is refused.
    with pytest.raises(Unauthorized):
        authenticate(trusting, token(claims(), ALPHA, headers={"kid": "next"}), INSIDE)


def test_the_source_address_is_checked_before_any_signature_work(
    trusting: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = token(claims(), ALPHA)
    checked: list[str] = []
    original = jwt.decode

    def spy(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("options", {}).get("verify_signature"):
            checked.append("signature")
        return original(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    with pytest.raises(Unauthorized) as caught:
        authenticate(trusting, good, OUTSIDE)
    assert isinstance(caught.value, NotVerified)
    assert "source address" in caught.value.reason
    assert caught.value.service == "alpha"
    assert checked == []
    assert authenticate(trusting, good, INSIDE)
    assert checked == ["signature"]
    # Once verified and cached, the address still counts on every request.
    with pytest.raises(Unauthorized):
        authenticate(trusting, good, OUTSIDE)


def certificate(cn: str) -> str:
    cert, _ = issue(cn)
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_a_client_certificate_must_name_the_tokens_service(trusting: Authenticator) -> None:
    beta = token(claims("beta"), BETA)
    assert authenticate(trusting, beta, Peer("", certificate("beta"))).service.name == "beta"
    for peer in (Peer("", certificate("alpha")), Peer("", "not a certificate"), Peer("")):
        with pytest.raises(Unauthorized) as caught:
            authenticate(trusting, beta, peer)
        assert isinstance(caught.value, NotVerified)
        assert str(caught.value) == NOT_VERIFIED  # the caller learns nothing more
        assert "client certificate" in caught.value.reason


def test_a_jti_too_long_for_the_ledgers_is_refused(auth: Authenticator) -> None:
    assert "jti longer" in refused(auth, token(claims(jti="j" * 257)))


def test_revocation_reaches_cached_tokens(auth: Authenticator, revocations: RevocationList) -> None:
    from vault.approvals import Authority
    from vault.tokens import Revoker

    class Approved:  # two officers' approval, as vault.approvals.DualControl would give it
        @contextmanager
        def authorize(self, request_id: str, action: Any, actor: str) -> Iterator[tuple[str, ...]]:
            assert (request_id, action.kind, action.target) == (
                "r-1",
                "service.revoke_tokens",
                "beta",
            )
            yield ("alice", "bob")

    presented = token()
    principal = authenticate(auth, presented)
    revoker = Revoker(
        revocations.store,
        MAX_LIFETIME,
        LEEWAY,
        dual_control=Approved(),  # type: ignore[arg-type]
    )
    revoker.revoke_token("alpha", principal.token_id, Authority("officer:alice"))
    revocations._read_at = -1e9
    with pytest.raises(Unauthorized) as caught:
        authenticate(auth, presented)
    assert "revoked" in str(caught.value)
    # Every token of beta issued before now, however it was signed, and none after.
    beta_old = token(claims("beta", iat=int(time.time()) - 10), BETA)
    revoker.revoke_service("beta", time.time() - 5, Authority("officer:alice", "r-1"))
    revocations._read_at = -1e9
    with pytest.raises(Unauthorized):
        authenticate(auth, beta_old)
    assert authenticate(auth, token(claims("beta"), BETA)).service.name == "beta"


def test_a_stale_revocation_list_fails_closed(
    auth: Authenticator, revocations: RevocationList
) -> None:
    from vault.errors import StoreUnavailable

    assert authenticate(auth, token())  # read once
    revocations.store = RevocationStore(Database.open("sqlite:////nonexistent-dir/x.db"))
    revocations._read_at = -1e9  # and not again for longer than max_stale
    with pytest.raises(StoreUnavailable):
        authenticate(auth, token())
