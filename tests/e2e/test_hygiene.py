"""Small things a vault must get right, over HTTP against a real server: no cache keeps an
answer that may carry a secret, a refused token says nothing about which services exist,
a bad ``auto_rotate_period`` changes nothing, and a key refuses what it was not made for."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.conftest import Server, token_objects
from tests.e2e.test_payout_api import partner_seals
from vault.bootstrap import load_dev_key

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning"),
]

# Fields of a success answer that hold a secret: a plaintext, a data key, random bytes, a
# seed (in the provisioning), an opened message.
SECRET_FIELDS = {"plaintext", "random_bytes", "provisioning", "payload", "payload_b64"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _secret_answers(server: Server, settings: Any) -> dict[tuple[str, str], list[httpx.Response]]:
    """One or more successful answers of every route that may carry a secret."""
    out: dict[tuple[str, str], list[httpx.Response]] = {}
    with server.client("backup-service") as c:
        ct = c.post("/v1/transit/encrypt/backup-share", json={"plaintext": b64(b"share")})
        ciphertext = ct.json()["data"]["ciphertext"]
        out[("post", "/v1/transit/decrypt/{name}")] = [
            c.post("/v1/transit/decrypt/backup-share", json={"ciphertext": ciphertext}),
            c.post(
                "/v1/transit/decrypt/backup-share",
                json={"batch_input": [{"ciphertext": ciphertext}]},
            ),
        ]
        out[("post", "/v1/transit/datakey/{kind}/{name}")] = [
            c.post(f"/v1/transit/datakey/{kind}/backup-share", json={})
            for kind in ("plaintext", "wrapped")
        ]
    with server.client("payout-gateway") as c:
        out[("post", "/v1/transit/random")] = [c.post("/v1/transit/random", json={})]
        out[("post", "/v1/transit/random/{count}")] = [c.post("/v1/transit/random/16")]
        out[("post", "/v1/transit/random/{source}/{count}")] = [
            c.post("/v1/transit/random/platform/16")
        ]
        out[("post", "/v1/payout/open/{partner}")] = [
            c.post("/v1/payout/open/globex-pay", json={"jwe": partner_seals(c, settings, p)})
            for p in ("globex-pay",)
        ]
    identity = {"app_id": "wallet", "dfp_hash": "c0ffee", "kind": "totp"}
    with server.client("token-management") as c:
        out[("post", "/v1/otp/seeds/{name}")] = [
            c.post(
                "/v1/otp/seeds/otp-seeds", json={"token_serial": f"t-{uuid.uuid4()}", **identity}
            )
        ]
        out[("post", "/v1/otp/seeds/{name}/import")] = [
            c.post(
                "/v1/otp/seeds/otp-seeds/import",
                json={"token_serial": f"t-{uuid.uuid4()}", **identity, "seed_hex": "ab" * 20},
            )
        ]
    return out


def _documented_secret_routes(server: Server) -> set[tuple[str, str]]:
    """Every route whose documented success answer has a secret field (OpenAPI document)."""
    with server.client("backup-service") as c:
        doc = c.get("/v1/sys/openapi/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def resolved(schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        return resolved(schemas[ref.rsplit("/", 1)[1]]) if ref else schema

    found = set()
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            ok = operation.get("responses", {}).get("200", {}).get("content", {})
            for content in ok.values():
                reply = resolved(content["schema"])
                data = resolved(reply.get("properties", {}).get("data", {}))
                if SECRET_FIELDS & set(data.get("properties", {})):
                    found.add((method, path))
    return found


def test_no_answer_that_may_carry_a_secret_is_cached(server: Server, settings: Any) -> None:
    answers = _secret_answers(server, settings)
    assert set(answers) == _documented_secret_routes(server)
    for route, responses in answers.items():
        for r in responses:
            assert r.status_code == 200, (route, r.text)
            assert r.headers.get("cache-control") == "no-store", route
    with server.client("backup-service") as c:  # an answer without a secret may be cached
        r = c.post("/v1/transit/encrypt/backup-share", json={"plaintext": b64(b"x")})
        assert "cache-control" not in r.headers


# -- 401 --------------------------------------------------------------------------------------


def test_a_service_name_cannot_be_confirmed(server: Server, settings: Any) -> None:
    """Unknown service, a known service with another key or algorithm: one and the same
    401, so the answers enumerate nothing."""
    now = int(time.time())

    def token(sub: str, key: Any, alg: str) -> str:
        body = {"sub": sub, "aud": settings.jwt_audience, "iat": now, "exp": now + 300}
        return jwt.encode({**body, "jti": str(uuid.uuid4())}, key, alg)

    stranger_ed = ed25519.Ed25519PrivateKey.generate()
    stranger_ec = ec.generate_private_key(ec.SECP256R1())
    presented = [
        token("backup-service", stranger_ed, "EdDSA"),  # known, bad signature
        token("mallory-service", stranger_ed, "EdDSA"),  # unknown
        token("mallory-service", stranger_ec, "ES256"),
        token("backup-service", stranger_ec, "ES256"),  # known, another algorithm
    ]
    answers = []
    with server.client(None) as c:
        for t in presented:
            r = c.post(
                "/v1/transit/encrypt/backup-share",
                json={"plaintext": "aGk="},
                headers={"X-Vault-Token": t},
            )
            answers.append((r.status_code, r.json()))
    assert all(a == answers[0] for a in answers), answers
    assert answers[0][0] == 401
    assert "service" not in answers[0][1]["errors"][0]
    # A good token of the same service still works (the refusals were not a fluke).
    good = token("backup-service", load_dev_key(settings, "backup-service"), "EdDSA")
    with server.client(None) as c:
        r = c.post(
            "/v1/transit/encrypt/backup-share",
            json={"plaintext": "aGk="},
            headers={"X-Vault-Token": good},
        )
    assert r.status_code == 200


# -- auto_rotate_period -------------------------------------------------------------------------

# Every input of issue 12 and of OpenBao's recorded answers (bao-report Q4) that OpenBao
# refuses, and those this vault refuses beyond it (its column is 32 bits of seconds).
BAD_PERIODS: list[Any] = [
    "1e400s",
    10**23,
    "1e999h",
    1e20,
    -1,
    "86400.0",
    86400.5,
    "P1D",
    "-1h",
    "1h0.5s",
    "9223372036s",
    9223372036,
    "2562047h",
    "9223372037s",
    "2562048h",
    9223372037,
    9223372036854775807,
    9223372036854775808,
    True,
    3599,
    "3599",
    [3600],
    {"h": 1},
]
# ... and the raw JSON OpenBao refuses before decoding it.
BAD_RAW_PERIODS = ["1e999", "-1e999", "NaN", "Infinity"]
GOOD_PERIODS = [("24h", 86400), (86400, 86400), ("86400", 86400), (3600, 3600), ("3600", 3600)]
GOOD_PERIODS += [("1d", 86400), ("0", 0), (0, 0), (None, 0)]


def _raw(period: Any) -> bytes:
    import json

    return json.dumps({"auto_rotate_period": period}).encode()


@pytest.fixture(scope="module")
def officer(server: Server) -> Any:
    with server.client("transit-conformance") as c:
        yield c


def _labels(settings: Any, name: str) -> list[str]:
    return [o["label"] for o in token_objects(settings) if f":{name}:" in o.get("label", "")]


@pytest.mark.parametrize(
    "raw",
    [_raw(p) for p in BAD_PERIODS]
    + [f'{{"auto_rotate_period": {p}}}'.encode() for p in BAD_RAW_PERIODS],
    ids=[repr(p) for p in BAD_PERIODS + BAD_RAW_PERIODS],
)
def test_a_bad_rotation_period_is_a_400_that_changes_nothing(
    officer: httpx.Client, raw: bytes
) -> None:
    name = f"conformance-period-{uuid.uuid4().hex[:8]}"
    headers = {"content-type": "application/json"}
    r = officer.post(f"/v1/transit/keys/{name}", content=raw, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["errors"]
    assert officer.get(f"/v1/transit/keys/{name}").status_code == 404
    assert officer.post(f"/v1/transit/keys/{name}", json={}).status_code == 200
    before = officer.get(f"/v1/transit/keys/{name}").json()["data"]
    r = officer.post(f"/v1/transit/keys/{name}/config", content=raw, headers=headers)
    assert r.status_code == 400, r.text
    assert officer.get(f"/v1/transit/keys/{name}").json()["data"] == before


def test_refused_creates_leave_no_hsm_object(officer: httpx.Client, settings: Any) -> None:
    name = f"conformance-period-{uuid.uuid4().hex[:8]}"
    for period in BAD_PERIODS:
        r = officer.post(f"/v1/transit/keys/{name}", content=_raw(period))
        assert r.status_code == 400, (period, r.text)
    assert _labels(settings, name) == []


@pytest.mark.parametrize(("period", "stored"), GOOD_PERIODS, ids=[repr(p) for p, _ in GOOD_PERIODS])
def test_a_good_rotation_period_is_stored(officer: httpx.Client, period: Any, stored: int) -> None:
    name = f"conformance-period-{uuid.uuid4().hex[:8]}"
    r = officer.post(f"/v1/transit/keys/{name}", json={"auto_rotate_period": period})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["auto_rotate_period"] == stored
    r = officer.post(f"/v1/transit/keys/{name}/config", json={"auto_rotate_period": period})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["auto_rotate_period"] == stored


# -- one key, one purpose -----------------------------------------------------------------------


def test_a_key_refuses_what_it_was_not_made_for(server: Server) -> None:
    with server.client("payout-gateway") as c:
        for name in ("payout-decryption", "payout-decryption-ec"):
            r = c.post(f"/v1/transit/sign/{name}", json={"input": b64(b"pay 100 EUR")})
            assert (r.status_code, r.json()) == (400, {"errors": ["key cannot be used for sign"]})
            r = c.post(
                f"/v1/transit/verify/{name}",
                json={"input": b64(b"pay 100 EUR"), "signature": "vault:v1:AAAA"},
            )
            assert (r.status_code, r.json()) == (400, {"errors": ["key cannot be used for verify"]})
        r = c.post("/v1/transit/sign/payout-signing", json={"input": b64(b"pay 100 EUR")})
        assert r.status_code == 200, r.text
    with server.client("security-officer") as c:
        info = c.get("/v1/transit/keys/payout-decryption").json()["data"]
        assert (info["purpose"], info["supports_signing"]) == ("decryption", False)
        info = c.get("/v1/transit/keys/payout-signing").json()["data"]
        assert (info["purpose"], info["supports_signing"]) == ("signing", True)
