"""Signatures, HMACs, record digests, blind indexes, sealed partner messages and random bytes
over HTTP against a real ``hsm-vault serve`` process; everything the vault produces is checked
with independent code (``cryptography``, ``joserfc``) holding only published public keys."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from joserfc import jwe, jws
from joserfc.jwk import KeySet, import_key

from vault.bootstrap import dev_partner_key_path

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning"),
]
MESSAGE = b"pay 100.00 EUR to DE89370400440532013000"
INPUT = base64.b64encode(MESSAGE).decode()
TYPES = ("ecdsa-p256", "ed25519", "rsa-3072")
JWS_ALG = {"ecdsa-p256": "ES256", "ed25519": "EdDSA", "rsa-3072": "PS256"}
PAYOUT = {"payout_id": "po-e2e", "amount": "250.00", "currency": "EUR"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["data"]


def errors(response: httpx.Response, status: int = 400) -> list[str]:
    assert response.status_code == status, response.text
    found: list[str] = response.json()["errors"]
    return found


@pytest.fixture(scope="module")
def conformance(server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with server.client("transit-conformance") as c:
        yield c


@pytest.fixture(scope="module")
def payout(server) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    with server.client("payout-gateway") as c:
        yield c


@pytest.fixture(scope="module")
def sig_keys(conformance: httpx.Client) -> dict[str, str]:
    names = {}
    for kind in TYPES:
        name = f"conformance-e2e-{kind}"
        data(conformance.post(f"/v1/transit/keys/{name}", json={"type": kind}))
        names[kind] = name
    return names


def sign(client: httpx.Client, name: str, path: str = "", **body: Any) -> str:
    result = data(client.post(f"/v1/transit/sign/{name}{path}", json={"input": INPUT, **body}))
    signature: str = result["signature"]
    assert signature.startswith(f"vault:v{result['key_version']}:")
    return signature


def verify(client: httpx.Client, name: str, path: str = "", **body: Any) -> bool:
    valid: bool = data(client.post(f"/v1/transit/verify/{name}{path}", json=body))["valid"]
    return valid


# -- sign / verify -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TYPES)
def test_signatures_verify_with_the_published_pem(
    conformance: httpx.Client, sig_keys: dict[str, str], kind: str
) -> None:
    name = sig_keys[kind]
    signature = sign(conformance, name, hash_algorithm="sha2-384")
    raw = base64.b64decode(signature.split(":", 2)[2])
    pem = data(conformance.get(f"/v1/transit/keys/{name}"))["keys"]["1"]["public_key"]
    public = serialization.load_pem_public_key(pem.encode())
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(raw, MESSAGE, ec.ECDSA(hashes.SHA384()))
    elif isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(raw, MESSAGE)
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
        public.verify(raw, MESSAGE, pss, hashes.SHA384())
    assert verify(conformance, name, input=INPUT, signature=signature, hash_algorithm="sha2-384")
    assert verify(conformance, name, "/sha2-384", input=INPUT, signature=signature)
    tampered = base64.b64encode(MESSAGE + b"0").decode()
    assert not verify(conformance, name, "/sha2-384", input=tampered, signature=signature)


@pytest.mark.parametrize("kind", TYPES)
def test_jws_signatures_verify_with_joserfc_and_the_jwks(
    conformance: httpx.Client, sig_keys: dict[str, str], kind: str
) -> None:
    name, alg = sig_keys[kind], JWS_ALG[kind]
    jwks = data(conformance.get(f"/v1/transit/keys/{name}/jwks"))
    assert [(k["kid"], k["alg"], k["use"]) for k in jwks["keys"]] == [(f"{name}:v1", alg, "sig")]
    header = b64url(json.dumps({"alg": alg, "kid": f"{name}:v1"}).encode())
    signing_input = f"{header}.{b64url(MESSAGE)}".encode()
    signature = data(
        conformance.post(
            f"/v1/transit/sign/{name}",
            json={"input": base64.b64encode(signing_input).decode(), "marshaling_algorithm": "jws"},
        )
    )["signature"]
    compact = f"{signing_input.decode()}.{signature.split(':', 2)[2]}"
    verified = jws.deserialize_compact(
        compact,
        KeySet.import_key_set(jwks),
        algorithms=[alg],  # type: ignore[arg-type]
    )
    assert verified.payload == MESSAGE


def test_rsa_pkcs1v15_and_prehashed(conformance: httpx.Client, sig_keys: dict[str, str]) -> None:
    name = sig_keys["rsa-3072"]
    v15 = sign(conformance, name, signature_algorithm="pkcs1v15")
    assert verify(conformance, name, input=INPUT, signature=v15, signature_algorithm="pkcs1v15")
    assert not verify(conformance, name, input=INPUT, signature=v15)  # pss is the default
    digest = base64.b64encode(hashlib.sha256(MESSAGE).digest()).decode()
    pre = data(
        conformance.post(f"/v1/transit/sign/{name}", json={"input": digest, "prehashed": True})
    )["signature"]
    assert verify(conformance, name, input=INPUT, signature=pre)
    bad = conformance.post(
        f"/v1/transit/sign/{sig_keys['ecdsa-p256']}", json={"input": INPUT, "prehashed": True}
    )
    assert "prehashed input must be" in errors(bad)[0]


def test_rotation_over_http(conformance: httpx.Client) -> None:
    name = "conformance-e2e-rotate"
    data(conformance.post(f"/v1/transit/keys/{name}", json={"type": "ecdsa-p256"}))
    old = sign(conformance, name)
    data(conformance.post(f"/v1/transit/keys/{name}/rotate"))
    time.sleep(1.1)  # the server's key cache (VAULT_KEY_CACHE_TTL, 1 s)
    new = sign(conformance, name)
    assert new.startswith("vault:v2:")
    assert verify(conformance, name, input=INPUT, signature=old)
    assert verify(conformance, name, input=INPUT, signature=new)
    assert len(data(conformance.get(f"/v1/transit/keys/{name}/jwks"))["keys"]) == 2
    data(conformance.post(f"/v1/transit/keys/{name}/config", json={"min_decryption_version": 2}))
    time.sleep(1.1)
    r = conformance.post(f"/v1/transit/verify/{name}", json={"input": INPUT, "signature": old})
    assert errors(r) == ["key version 1 is below min_decryption_version (too old)"]


def test_sign_batch_follows_vault(conformance: httpx.Client, sig_keys: dict[str, str]) -> None:
    name = sig_keys["ed25519"]
    r = conformance.post(
        f"/v1/transit/sign/{name}",
        json={
            "input": None,
            "batch_input": [
                {"input": INPUT, "reference": "a"},
                {"input": "!!bad", "reference": "b"},
                {"input": "bTI="},
                {"reference": 5},
            ],
        },
    )
    results = data(r)["batch_results"]
    assert results[0]["reference"] == "a"
    assert results[0]["key_version"] == 1
    assert results[1] == {
        "key_version": 0,
        "error": "unable to decode input as base64",
        "reference": "b",
    }
    assert results[2]["reference"] == ""
    assert results[3] == {"key_version": 0, "error": "missing input", "reference": "5"}
    r = conformance.post(
        f"/v1/transit/verify/{name}",
        json={
            "batch_input": [
                {"input": INPUT, "signature": results[0]["signature"], "reference": "a"},
                {"input": "d3Jvbmc=", "signature": results[0]["signature"], "reference": "b"},
                {"input": INPUT, "signature": "garbage", "reference": "c"},
            ]
        },
    )
    assert data(r)["batch_results"] == [
        {"valid": True, "reference": "a"},
        {"valid": False, "reference": "b"},
        {
            "valid": False,
            "error": "invalid signature: expected vault:v<version>:<value>",
            "reference": "c",
        },
    ]
    all_bad = conformance.post(f"/v1/transit/sign/{name}", json={"batch_input": [{"input": "!!"}]})
    assert all_bad.status_code == 200  # sign batches are 200 even when every item fails
    assert errors(conformance.post(f"/v1/transit/sign/{name}", json={"batch_input": []})) == [
        "missing batch input to process"
    ]
    missing = conformance.post(
        f"/v1/transit/verify/{name}", json={"batch_input": [{"input": INPUT, "reference": "a"}]}
    )
    assert errors(missing) == ["no batch_input elements have 'signature' or 'hmac'"]


def test_verify_errors_follow_vault(conformance: httpx.Client, sig_keys: dict[str, str]) -> None:
    name = sig_keys["ed25519"]
    signature = sign(conformance, name)
    cases = [
        (
            {"input": INPUT, "signature": "garbage"},
            "invalid signature: expected vault:v<version>:<value>",
        ),
        ({"input": INPUT, "signature": "vault:v1:!!!"}, "invalid base64 signature value"),
        ({"input": INPUT, "signature": "vault:v9:AAAA"}, "key version 9 does not exist"),
        ({"input": INPUT}, "neither a 'signature' nor an 'hmac' were given to verify"),
    ]
    for body, message in cases:
        assert errors(conformance.post(f"/v1/transit/verify/{name}", json=body)) == [message]
    # hvac sends "name" in the body; unknown fields are ignored.
    hvac_body = {"name": name, "input": INPUT, "signature": signature, "x": 1}
    assert data(conformance.post(f"/v1/transit/verify/{name}", json=hvac_body))["valid"]
    assert not verify(conformance, name, signature=signature)  # missing input = empty
    assert not verify(conformance, name, input=INPUT, signature="vault:v1:AAAA")
    assert errors(
        conformance.post(f"/v1/transit/sign/{sig_keys['ecdsa-p256']}/sha2-999", json={})
    ) == ['invalid hash algorithm "sha2-999"']
    assert (
        conformance.post("/v1/transit/sign/conformance-missing", json={"input": INPUT}).status_code
        == 404
    )


# -- HMAC, record digests, blind indexes ----------------------------------------------------


def test_hmac_and_verify(payout: httpx.Client) -> None:
    mac = data(payout.post("/v1/transit/hmac/payout-digest", json={"input": INPUT}))["hmac"]
    assert mac.startswith("vault:v1:")
    assert len(base64.b64decode(mac.split(":", 2)[2])) == 32
    assert verify(payout, "payout-digest", input=INPUT, hmac=mac)
    assert not verify(payout, "payout-digest", input="eA==", hmac=mac)
    r = payout.post(
        "/v1/transit/verify/payout-digest",
        json={
            "batch_input": [
                {"input": INPUT, "hmac": mac, "reference": "a"},
                {"input": "eA==", "hmac": mac, "reference": "b"},
                {"input": INPUT, "hmac": "garbage", "reference": "c"},
            ]
        },
    )
    assert data(r)["batch_results"] == [
        {"valid": True, "reference": "a"},
        {"reference": "b"},  # Vault omits "valid" from a failed HMAC item
        {"error": "invalid HMAC to verify: expected vault:v<version>:<value>", "reference": "c"},
    ]
    r = payout.post(
        "/v1/transit/hmac/payout-digest",
        json={"batch_input": [{"input": INPUT, "reference": "a"}, {"input": "!!"}, {}]},
    )
    assert data(r)["batch_results"] == [
        {"hmac": mac, "reference": "a"},
        {"error": "unable to decode input as base64", "reference": ""},
        {"error": "missing input for HMAC", "reference": ""},
    ]
    assert errors(payout.post("/v1/transit/hmac/payout-digest", json={})) == [
        "missing input for HMAC"
    ]
    long_mac = data(payout.post("/v1/transit/hmac/payout-digest/sha2-512", json={"input": INPUT}))
    assert len(base64.b64decode(long_mac["hmac"].split(":", 2)[2])) == 64


def test_record_digest_over_http(payout: httpx.Client) -> None:
    fields = [["payout_id", "po-1"], ["amount", "100.00"], ["attempt", 1], ["urgent", False]]
    made = data(payout.post("/v1/transit/digest/payout-digest", json={"fields": fields}))
    assert made["key_version"] == 1
    digest = made["digest"]
    swapped = [fields[1], fields[0], *fields[2:]]
    changed = [fields[0], ["amount", "100.01"], *fields[2:]]
    for other in (swapped, changed):
        again = data(payout.post("/v1/transit/digest/payout-digest", json={"fields": other}))
        assert again["digest"] != digest
    ok = payout.post(
        "/v1/transit/digest/payout-digest/verify", json={"fields": fields, "digest": digest}
    )
    assert data(ok) == {"valid": True}
    bad = payout.post(
        "/v1/transit/digest/payout-digest/verify", json={"fields": changed, "digest": digest}
    )
    assert data(bad) == {"valid": False}
    batch = payout.post(
        "/v1/transit/digest/payout-digest",
        json={"batch_input": [{"fields": fields, "reference": "r1"}, {"fields": []}]},
    )
    results = data(batch)["batch_results"]
    assert results[0] == {"digest": digest, "key_version": 1, "reference": "r1"}
    assert "error" in results[1]
    floats = payout.post("/v1/transit/digest/payout-digest", json={"fields": [["amount", 1.5]]})
    assert floats.status_code == 400


def test_blind_index_over_http(payout: httpx.Client) -> None:
    def index(value: str) -> str:
        body = {"value": value, "normalization": "pan", "context": "cards.pan"}
        made = data(payout.post("/v1/transit/blind-index/payout-digest", json=body))
        assert made["key_version"] == 1
        result: str = made["blind_index"]
        return result

    assert index("4111 1111 1111 1111") == index("4111-1111-1111-1111")
    assert index("4111 1111 1111 1111") != index("4111 1111 1111 1112")
    bad = payout.post(
        "/v1/transit/blind-index/payout-digest",
        json={"value": "4111", "normalization": "pan"},
    )
    assert errors(bad) == ["value is not a card number (12 to 19 digits)"]


# -- sealed partner messages ---------------------------------------------------------------


def partner_jwks(payout: httpx.Client, partner: str) -> dict[str, Any]:
    found: dict[str, Any] = data(payout.get(f"/v1/payout/partners/{partner}/jwks"))
    return found


def partner_seals(  # type: ignore[no-untyped-def]
    payout: httpx.Client, settings, partner: str, iat: int | None = None, payload: Any = PAYOUT
) -> str:
    sig_alg, to_us = {
        "acme-bank": ("ES256", "RSA-OAEP"),
        "globex-pay": ("EdDSA", "ECDH-ES+A256KW"),
    }[partner]
    claims = {
        "iss": partner,
        "aud": "hsm-vault",
        "iat": int(time.time()) if iat is None else iat,
        "jti": str(uuid.uuid4()),
        "payload": payload,
    }
    sig_key = import_key(dev_partner_key_path(settings, partner, "sig").read_bytes())
    inner = jws.serialize_compact(
        {"alg": sig_alg}, json.dumps(claims), sig_key, algorithms=[sig_alg]
    )
    enc = next(k for k in partner_jwks(payout, partner)["keys"] if k["use"] == "enc")
    assert enc["alg"] == to_us
    return jwe.encrypt_compact(
        {"alg": to_us, "enc": "A256GCM", "cty": "JWT", "kid": enc["kid"]},
        inner,
        import_key(enc),
        algorithms=[to_us, "A256GCM"],
    )


@pytest.mark.parametrize(
    ("partner", "to_partner", "sig_alg"),
    [("acme-bank", "RSA-OAEP-256", "ES256"), ("globex-pay", "ECDH-ES+A256KW", "EdDSA")],
)
def test_partner_opens_what_the_vault_seals_over_http(
    payout: httpx.Client, settings, partner: str, to_partner: str, sig_alg: str
) -> None:  # type: ignore[no-untyped-def]
    sealed = data(payout.post(f"/v1/payout/seal/{partner}", json={"payload": PAYOUT}))
    assert set(sealed) == {"jwe", "message_id", "issued_at", "key_version"}
    enc_key = import_key(dev_partner_key_path(settings, partner, "enc").read_bytes())
    decrypted = jwe.decrypt_compact(sealed["jwe"], enc_key, algorithms=[to_partner, "A256GCM"])
    assert decrypted.plaintext is not None
    ours = KeySet.import_key_set(
        {"keys": [k for k in partner_jwks(payout, partner)["keys"] if k["use"] == "sig"]}  # type: ignore[typeddict-item]
    )
    claims = json.loads(
        jws.deserialize_compact(decrypted.plaintext, ours, algorithms=[sig_alg]).payload
    )
    assert claims["payload"] == PAYOUT
    assert claims["jti"] == sealed["message_id"]
    assert claims["iat"] == sealed["issued_at"]


@pytest.mark.parametrize("partner", ["acme-bank", "globex-pay"])
def test_vault_opens_what_the_partner_seals_and_refuses_replays(
    payout: httpx.Client, settings, partner: str
) -> None:  # type: ignore[no-untyped-def]
    token = partner_seals(payout, settings, partner)
    opened = data(payout.post(f"/v1/payout/open/{partner}", json={"jwe": token}))
    assert opened["payload"] == PAYOUT
    assert abs(opened["issued_at"] - time.time()) < 10
    replay = payout.post(f"/v1/payout/open/{partner}", json={"jwe": token})
    assert errors(replay) == ["message replayed"]


def test_stale_messages_are_refused(payout: httpx.Client, settings) -> None:  # type: ignore[no-untyped-def]
    token = partner_seals(payout, settings, "globex-pay", iat=int(time.time()) - 120)
    stale = payout.post("/v1/payout/open/globex-pay", json={"jwe": token})
    assert errors(stale) == ["message timestamp outside the allowed window"]


def test_binary_payload_and_bad_requests(payout: httpx.Client) -> None:
    sealed = payout.post("/v1/payout/seal/globex-pay", json={"payload_b64": "AAEC"})
    assert sealed.status_code == 200, sealed.text
    assert errors(payout.post("/v1/payout/seal/globex-pay", json={})) == [
        "missing payload (a JSON value) or payload_b64"
    ]
    assert errors(payout.post("/v1/payout/open/globex-pay", json={"jwe": "a.b"})) == [
        "not a compact JWE"
    ]
    assert payout.post("/v1/payout/seal/nobody", json={"payload": 1}).status_code == 404


# -- random ------------------------------------------------------------------------------


def test_random_bytes(payout: httpx.Client) -> None:
    default = data(payout.post("/v1/transit/random", json={}))["random_bytes"]
    assert len(base64.b64decode(default, validate=True)) == 32
    hexed = data(payout.post("/v1/transit/random", json={"bytes": 64, "format": "hex"}))
    assert len(bytes.fromhex(hexed["random_bytes"])) == 64
    by_path = data(payout.post("/v1/transit/random/16", json={}))["random_bytes"]
    assert len(base64.b64decode(by_path)) == 16
    draws = {data(payout.post("/v1/transit/random", json={}))["random_bytes"] for _ in range(5)}
    assert len(draws) == 5
    assert payout.post("/v1/transit/random", json={"bytes": 0}).status_code == 400
    assert payout.post("/v1/transit/random", json={"format": "bin"}).status_code == 400


# -- policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "method", "path", "body"),
    [
        ("backup-service", "POST", "/v1/transit/sign/payout-signing", {"input": INPUT}),
        ("backup-service", "POST", "/v1/transit/random", {}),
        ("payout-gateway", "POST", "/v1/transit/sign/conformance-e2e-ed25519", {"input": INPUT}),
        ("payout-gateway", "POST", "/v1/transit/hmac/backup-share", {"input": INPUT}),
        ("payout-gateway", "POST", "/v1/transit/digest/backup-share", {"fields": [["a", 1]]}),
        ("identity-service", "POST", "/v1/payout/seal/acme-bank", {"payload": 1}),
        ("transit-conformance", "POST", "/v1/payout/open/acme-bank", {"jwe": "a.b.c.d.e"}),
        ("transit-conformance", "GET", "/v1/payout/partners/acme-bank/jwks", None),
        ("backup-service", "GET", "/v1/transit/keys/payout-signing/jwks", None),
    ],
)
def test_services_without_the_grant_get_403(
    server, service: str, method: str, path: str, body: Any
) -> None:  # type: ignore[no-untyped-def]
    with server.client(service) as c:
        r = c.request(method, path, json=body)
    assert r.status_code == 403, r.text


def test_no_token_is_401(server) -> None:  # type: ignore[no-untyped-def]
    with server.client(None) as c:
        assert c.post("/v1/transit/sign/payout-signing", json={}).status_code == 401
        assert c.post("/v1/payout/seal/acme-bank", json={"payload": 1}).status_code == 401
