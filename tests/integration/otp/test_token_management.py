"""The token-management service's operations over HTTP (in-process app, real SoftHSM2 and
database): a seed's state, unlocking, RFC 4226 §7.4 resynchronization, deactivation; and
the OTP inputs that once gave 500 or weakened the lockout and replay rules."""

from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pyotp
import pytest
from litestar.testing import TestClient

from tests.integration.otp.conftest import legacy_binding
from vault.otp import seeds

VECTORS = Path(__file__).resolve().parents[2] / "vectors"
RFC4226 = json.loads((VECTORS / "rfc4226.json").read_text(encoding="utf-8"))
SECRET = bytes.fromhex(RFC4226["secret_hex"])
HOTP = pyotp.HOTP(base64.b32encode(SECRET).decode())
IDENT = {"app_id": "app", "dfp_hash": "dfp"}
pytestmark = pytest.mark.hsm


def _import(client: TestClient[Any], kind: str = "hotp", **extra: Any) -> tuple[str, str]:
    serial = f"mgmt-{uuid.uuid4()}"
    body = {"token_serial": serial, **IDENT, "kind": kind, "seed_hex": SECRET.hex(), **extra}
    r = client.post("/v1/otp/seeds/otp-seeds/import", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["encrypted_seed"]), serial


def _verify(client: TestClient[Any], blob: str, serial: str, otp: str, **extra: Any) -> Any:
    body = {"encrypted_seed": blob, "token_serial": serial, **IDENT, "otp": otp, **extra}
    return client.post("/v1/otp/verify/otp-seeds", json=body)


def _op(client: TestClient[Any], op: str, blob: str, **extra: Any) -> Any:
    return client.post(f"/v1/otp/seeds/otp-seeds/{op}", json={"encrypted_seed": blob, **extra})


def _state(client: TestClient[Any], blob: str) -> dict[str, Any]:
    r = _op(client, "state", blob)
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


def _wrong(code: str) -> str:
    return str((int(code) + 1) % 10 ** len(code)).zfill(len(code))


def test_state_of_a_new_then_a_used_seed(client: TestClient[Any]) -> None:
    blob, serial = _import(client)
    state = _state(client, blob)
    assert state == {
        "seed_id": seeds.parse(blob).seed_id.hex(),
        "kind": "hotp",
        "key_version": seeds.parse(blob).version,
        "failures": 0,
        "locked": False,
        "locked_until": None,
        "deactivated": False,
        "deactivated_at": None,
        "next_counter": 0,
    }
    assert _verify(client, blob, serial, HOTP.at(3), counter=0, window=5).json()["data"]["valid"]
    _verify(client, blob, serial, _wrong(HOTP.at(4)), counter=4, window=0)
    state = _state(client, blob)
    assert (state["counter"], state["next_counter"], state["failures"]) == (3, 4, 1)


def test_unlock_a_locked_seed(client: TestClient[Any]) -> None:
    blob, serial = _import(client)
    for _ in range(5):
        _verify(client, blob, serial, _wrong(HOTP.at(0)), counter=0, window=0)
    assert _verify(client, blob, serial, HOTP.at(0)).json()["data"]["reason"] == "locked"
    locked = _state(client, blob)
    assert locked["locked"] is True
    assert locked["failures"] == 5
    unlocked = _op(client, "unlock", blob)
    assert unlocked.status_code == 200, unlocked.text
    assert (unlocked.json()["data"]["locked"], unlocked.json()["data"]["failures"]) == (False, 0)
    assert _verify(client, blob, serial, HOTP.at(0)).json()["data"]["valid"] is True


def test_resync_with_two_consecutive_codes(client: TestClient[Any]) -> None:
    blob, serial = _import(client)
    # Far beyond the verification look-ahead, within the resynchronization window.
    assert _verify(client, blob, serial, HOTP.at(60)).json()["data"]["reason"] == "mismatch"
    r = _op(client, "resync", blob, otp=HOTP.at(60), next_otp=HOTP.at(61))
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"valid": True, "counter": 61, "next_counter": 62}
    assert _state(client, blob)["failures"] == 0  # a successful resync resets the count
    assert _verify(client, blob, serial, HOTP.at(62)).json()["data"]["counter"] == 62
    assert _verify(client, blob, serial, HOTP.at(61), counter=61).json()["data"] == {
        "valid": False,
        "reason": "replayed",
    }
    # The counter never moves back, even with two genuine consecutive codes.
    back = _op(client, "resync", blob, otp=HOTP.at(10), next_otp=HOTP.at(11)).json()["data"]
    assert back["valid"] is False
    assert _state(client, blob)["next_counter"] == 63


def test_resync_refuses_codes_that_are_not_consecutive_or_too_far(
    client: TestClient[Any],
) -> None:
    blob, _ = _import(client)
    apart = _op(client, "resync", blob, otp=HOTP.at(5), next_otp=HOTP.at(7)).json()["data"]
    assert apart == {"valid": False, "reason": "mismatch"}
    far = _op(client, "resync", blob, otp=HOTP.at(500), next_otp=HOTP.at(501)).json()["data"]
    assert far == {"valid": False, "reason": "mismatch"}
    assert _state(client, blob)["failures"] == 2  # a failed resync counts like a failed code
    wide = _op(client, "resync", blob, otp=HOTP.at(500), next_otp=HOTP.at(501), window=600)
    assert wide.json()["data"]["counter"] == 501
    assert (
        _op(client, "resync", blob, otp=HOTP.at(0), next_otp=HOTP.at(1), window=1001).status_code
        == 400
    )


def test_resync_is_for_hotp_only(client: TestClient[Any]) -> None:
    blob, _ = _import(client, kind="totp")
    r = _op(client, "resync", blob, otp="123456", next_otp="654321")
    assert r.status_code == 400
    assert "HOTP" in r.json()["errors"][0]


def test_deactivation_is_for_good(client: TestClient[Any]) -> None:
    blob, serial = _import(client)
    assert _verify(client, blob, serial, HOTP.at(0)).json()["data"]["valid"] is True
    r = _op(client, "deactivate", blob)
    assert r.status_code == 200, r.text
    first = r.json()["data"]
    assert first["deactivated"] is True
    assert _verify(client, blob, serial, HOTP.at(1)).json()["data"] == {
        "valid": False,
        "reason": "deactivated",
    }
    resync = _op(client, "resync", blob, otp=HOTP.at(5), next_otp=HOTP.at(6)).json()["data"]
    assert resync == {"valid": False, "reason": "deactivated"}
    unlock = _op(client, "unlock", blob)
    assert unlock.status_code == 400
    assert "deactivated" in unlock.json()["errors"][0]
    again = _op(client, "deactivate", blob).json()["data"]
    assert again["deactivated_at"] == first["deactivated_at"]


@pytest.mark.parametrize("op", ["state", "unlock", "deactivate"])
def test_operations_need_a_genuine_blob(client: TestClient[Any], op: str) -> None:
    blob, _ = _import(client)
    prefix, _, body = blob.rpartition(":")
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1  # the tag
    forged = f"{prefix}:{base64.b64encode(bytes(raw)).decode()}"
    r = _op(client, op, forged)
    assert r.status_code == 400
    assert r.json()["errors"] == ["invalid ciphertext: message authentication failed"]
    assert _state(client, blob)["deactivated"] is False


# -- issue 12 item 5 ------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "status"), [(10, 400), (15, 400), (16, 200), (20, 200)])
def test_imported_seeds_shorter_than_128_bits_are_refused(
    client: TestClient[Any], size: int, status: int
) -> None:
    r = client.post(
        "/v1/otp/seeds/otp-seeds/import",
        json={"token_serial": "short", "kind": "hotp", "seed_hex": "ab" * size},
    )
    assert r.status_code == status, r.text
    if status == 400:
        assert "128 bits" in r.json()["errors"][0]


def _pskc(counter: int, secret: bytes = SECRET) -> str:
    xml = (VECTORS / "pskc-rfc6030-figure5-plain.xml").read_text(encoding="utf-8")
    xml = xml.replace("<PlainValue>0</PlainValue>", f"<PlainValue>{counter}</PlainValue>")
    xml = xml.replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", base64.b64encode(secret).decode())
    serial = f"pskc-{uuid.uuid4()}"
    return xml.replace("987654321", serial)


def _eight_digits(counter: int) -> str:
    return pyotp.HOTP(base64.b32encode(SECRET).decode(), digits=8).at(counter)


def test_a_pskc_counter_keeps_used_codes_used(client: TestClient[Any]) -> None:
    r = client.post("/v1/otp/seeds/otp-seeds/import-pskc", json={"pskc": _pskc(5), **IDENT})
    assert r.status_code == 200, r.text
    [token] = r.json()["data"]["tokens"]
    assert token["counter"] == 5
    blob, serial = token["encrypted_seed"], token["token_serial"]
    used = _verify(client, blob, serial, _eight_digits(4), counter=4).json()["data"]
    assert used == {"valid": False, "reason": "replayed"}
    fresh = _verify(client, blob, serial, _eight_digits(5)).json()["data"]
    assert (fresh["valid"], fresh["counter"]) == (True, 5)


def test_a_pskc_file_with_a_short_secret_imports_nothing(client: TestClient[Any]) -> None:
    r = client.post(
        "/v1/otp/seeds/otp-seeds/import-pskc", json={"pskc": _pskc(0, secret=b"x" * 10)}
    )
    assert r.status_code == 400
    assert "128 bits" in r.json()["errors"][0]


# -- issue 12 item 6 ------------------------------------------------------------------------


def _forged(params: bytes, serial: str) -> str:
    """A blob whose parameters no genuine blob holds. With the unkeyed binding of format 0x02
    anyone can make one that passes the binding check, so it reaches the parameters."""
    raw = (
        bytes([seeds.FORMAT_LEGACY])
        + bytes(16)
        + legacy_binding(serial, IDENT["app_id"], IDENT["dfp_hash"])
        + len(params).to_bytes(2, "big")
        + params
        + (24).to_bytes(2, "big")
        + bytes(24)
    )
    return seeds.assemble(1, raw, bytes(32))


@pytest.mark.parametrize(
    "params",
    [
        b'{"k":"xotp","a":"sha1","d":6,"p":30,"s":null}',
        b'{"k":"totp","a":"md5","d":6,"p":30,"s":null}',
        b'{"k":"totp","a":"sha1","d":1e400,"p":30,"s":null}',
        b'{"k":"ocra","a":"sha1","d":6,"p":null,"s":7}',
        b'{"k":"totp","a":"sha1","d":true,"p":30,"s":null}',
        b"[" * 2000,
        b'"totp"',
    ],
)
def test_a_forged_blob_with_impossible_parameters_is_400(
    client: TestClient[Any], params: bytes
) -> None:
    r = _verify(client, _forged(params, "forged"), "forged", "123456")
    assert r.status_code == 400, r.text
    assert r.json()["errors"] == ["invalid ciphertext: message authentication failed"]


def test_a_counter_beyond_the_ledger_is_400_and_changes_nothing(client: TestClient[Any]) -> None:
    blob, serial = _import(client)
    code = HOTP.at(2**63)  # found by the look-ahead from 2^63 - 1
    r = _verify(client, blob, serial, code, counter=2**63 - 1, window=1)
    assert r.status_code == 400, r.text
    assert re.search(r"2\^63", r.json()["errors"][0])
    assert _state(client, blob)["failures"] == 0
    assert "counter" not in _state(client, blob)
