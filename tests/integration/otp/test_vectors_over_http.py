"""RFC 4226, 6238 and 6287 vectors through the HTTP API, seeds imported into the HSM.

The app runs in-process (Litestar's test client, real HTTP semantics, the real SoftHSM2
token and database) so that the vectors' fixed times can be given to the OTP clock; the
API itself never lets a caller choose the time.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.integration.otp.conftest import Clock

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
pytestmark = pytest.mark.hsm


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _import(client: TestClient[Any], serial: str, **params: Any) -> str:
    r = client.post(
        "/v1/otp/seeds/otp-seeds/import",
        json={"token_serial": serial, "app_id": "app", "dfp_hash": "dfp", **params},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["encrypted_seed"])


def _verify(
    client: TestClient[Any], blob: str, serial: str, otp: str, **extra: Any
) -> dict[str, Any]:
    body = {
        "encrypted_seed": blob,
        "token_serial": serial,
        "app_id": "app",
        "dfp_hash": "dfp",
        "otp": otp,
    }
    r = client.post("/v1/otp/verify/otp-seeds", json={**body, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def test_rfc4226_appendix_d(client: TestClient[Any]) -> None:
    doc = load("rfc4226.json")
    serial = f"hotp-{uuid.uuid4()}"
    blob = _import(
        client, serial, kind="hotp", algorithm="sha1", digits=6, seed_hex=doc["secret_hex"]
    )
    for v in doc["vectors"]:
        result = _verify(client, blob, serial, v["hotp"], counter=v["counter"], window=0)
        assert result == {
            "valid": True,
            "counter": v["counter"],
            "next_counter": v["counter"] + 1,
            "drift": 0,
        }


def test_rfc4226_replay_and_look_ahead(client: TestClient[Any]) -> None:
    doc = load("rfc4226.json")
    serial = f"hotp-{uuid.uuid4()}"
    blob = _import(
        client, serial, kind="hotp", algorithm="sha1", digits=6, seed_hex=doc["secret_hex"]
    )
    codes = [v["hotp"] for v in doc["vectors"]]
    # Counter 3's code, expected counter 0, look-ahead 5: accepted with a drift of 3.
    assert _verify(client, blob, serial, codes[3], counter=0, window=5)["drift"] == 3
    assert _verify(client, blob, serial, codes[3], counter=0, window=5) == {
        "valid": False,
        "reason": "replayed",
    }
    assert _verify(client, blob, serial, codes[2], counter=0, window=5)["reason"] == "replayed"
    # Without a counter the vault continues from its own ledger.
    assert _verify(client, blob, serial, codes[4])["counter"] == 4
    assert _verify(client, blob, serial, codes[9], counter=4, window=3)["reason"] == "mismatch"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_rfc6238_appendix_b(client: TestClient[Any], clock: Clock, algorithm: str) -> None:
    doc = load("rfc6238.json")
    serial = f"totp-{algorithm}-{uuid.uuid4()}"
    blob = _import(
        client,
        serial,
        kind="totp",
        algorithm=algorithm,
        digits=8,
        period=30,
        seed_hex=doc["secrets_hex"][algorithm],
    )
    for v in (v for v in doc["vectors"] if v["algorithm"] == algorithm):
        clock.now = float(v["time"])
        result = _verify(client, blob, serial, v["totp"], window=0)
        assert result["valid"] is True, (v, result)
        assert result["time_step"] == int(v["time"]) // 30
        assert result["drift"] == 0


def test_totp_drift_window(client: TestClient[Any], clock: Clock) -> None:
    doc = load("rfc6238.json")
    v = next(v for v in doc["vectors"] if v["algorithm"] == "sha1" and v["time"] == 1111111109)
    serial = f"totp-drift-{uuid.uuid4()}"
    blob = _import(
        client, serial, kind="totp", algorithm="sha1", digits=8, seed_hex=doc["secrets_hex"]["sha1"]
    )
    clock.now = float(v["time"]) + 60  # two steps late: outside the default ±1
    assert _verify(client, blob, serial, v["totp"])["reason"] == "mismatch"
    clock.now = float(v["time"]) + 30  # one step late: inside
    result = _verify(client, blob, serial, v["totp"])
    assert result["valid"] is True
    assert result["drift"] == -1


def test_rfc6287_appendix_c(client: TestClient[Any], clock: Clock) -> None:
    doc = load("rfc6287.json")
    for i, v in enumerate(doc["vectors"]):
        serial = f"ocra-{i}-{uuid.uuid4()}"
        blob = _import(client, serial, kind="ocra", ocra_suite=v["suite"], seed_hex=v["seed_hex"])
        extra: dict[str, Any] = {"challenge": v["challenge"]}
        if v.get("challenge2"):
            extra["challenge2"] = v["challenge2"]
        if v.get("counter") is not None:
            extra["counter"] = v["counter"]
        if v.get("password"):
            extra["password"] = v["password"]
        if v.get("now") is not None:
            clock.now = float(v["now"])
        result = _verify(client, blob, serial, v["response"], **extra)
        assert result["valid"] is True, (v, result)


def test_ocra_missing_challenge_names_the_field(client: TestClient[Any]) -> None:
    serial = f"ocra-{uuid.uuid4()}"
    blob = _import(
        client, serial, kind="ocra", ocra_suite="OCRA-1:HOTP-SHA1-6:QN08", seed_hex="31" * 20
    )
    r = client.post(
        "/v1/otp/verify/otp-seeds",
        json={
            "encrypted_seed": blob,
            "token_serial": serial,
            "app_id": "app",
            "dfp_hash": "dfp",
            "otp": "123456",
        },
    )
    assert r.status_code == 400
    assert "challenge" in r.json()["errors"][0]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "totp", "digits": 5}, "digits"),
        ({"kind": "totp", "digits": 11}, "digits"),
        ({"kind": "totp", "period": 45}, "period"),
        ({"kind": "carrier-pigeon"}, "kind"),
        ({"kind": "totp", "algorithm": "md5"}, "algorithm"),
        ({"kind": "ocra", "ocra_suite": "OCRA-1:HOTP-SHA1-6:XX08"}, "suite"),
        ({"kind": "ocra"}, "ocra_suite"),
    ],
)
def test_malformed_token_parameters_name_the_field(
    client: TestClient[Any], body: dict[str, Any], field: str
) -> None:
    r = client.post(
        "/v1/otp/seeds/otp-seeds/import",
        json={"token_serial": "x", "seed_hex": "31" * 20, **body},
    )
    assert r.status_code == 400, r.text
    assert field in r.json()["errors"][0]


def test_pskc_import_then_verify(client: TestClient[Any]) -> None:
    doc = load("rfc4226.json")
    xml = (VECTORS / "pskc-rfc6030-figure6-psk-aes128cbc.xml").read_text()
    r = client.post(
        "/v1/otp/seeds/otp-seeds/import-pskc",
        json={
            "pskc": xml,
            "preshared_key_hex": "12345678901234567890123456789012",
            "app_id": "app",
            "dfp_hash": "dfp",
        },
    )
    assert r.status_code == 200, r.text
    tokens = r.json()["data"]["tokens"]
    assert len(tokens) == 1
    token = tokens[0]
    # The RFC's example seed is RFC 4226's; the file asks for 8 digits.
    code = str(doc["vectors"][0]["truncated_decimal"] % 10**8).zfill(8)
    result = _verify(client, token["encrypted_seed"], token["token_serial"], code, counter=0)
    assert result["valid"] is True
    wrong_key = client.post(
        "/v1/otp/seeds/otp-seeds/import-pskc",
        json={"pskc": xml, "preshared_key_hex": "00" * 16},
    )
    assert wrong_key.status_code == 400
