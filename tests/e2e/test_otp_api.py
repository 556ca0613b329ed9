"""The token-management service's view: real server processes, real SoftHSM2, pyotp codes."""

from __future__ import annotations

import concurrent.futures
import urllib.parse
import uuid
from typing import Any

import httpx
import pyotp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.conftest import Server

pytestmark = pytest.mark.e2e

IDENT = {"app_id": "wallet-app", "dfp_hash": "c0ffee"}


def _create(c: httpx.Client, **params: Any) -> tuple[str, dict[str, Any], str]:
    serial = f"swk-{uuid.uuid4()}"
    r = c.post("/v1/otp/seeds/otp-seeds", json={"token_serial": serial, **IDENT, **params})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return data["encrypted_seed"], data["provisioning"], serial


def _verify(c: httpx.Client, blob: str, serial: str, otp: str, **extra: Any) -> httpx.Response:
    body = {"encrypted_seed": blob, "token_serial": serial, **IDENT, "otp": otp, **extra}
    return c.post("/v1/otp/verify/otp-seeds", json=body)


def _totp(provisioning: dict[str, Any]) -> pyotp.TOTP:
    parsed = pyotp.parse_uri(provisioning["otpauth_uri"])
    assert isinstance(parsed, pyotp.TOTP)
    return parsed


def test_provisioning_uri_and_pyotp_codes(server: Server) -> None:
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(
            c, kind="totp", algorithm="sha256", digits=8, issuer="Wallet"
        )
        uri = urllib.parse.urlparse(provisioning["otpauth_uri"])
        assert uri.scheme == "otpauth"
        assert uri.netloc == "totp"
        totp = _totp(provisioning)
        assert totp.digits == 8
        r = _verify(c, blob, serial, totp.now())
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data["valid"] is True
        assert abs(data["drift"]) <= 1
        # The same code again is a replay, however it is asked.
        again = _verify(c, blob, serial, totp.now()).json()["data"]
        assert again == {"valid": False, "reason": "replayed"}


def test_wrong_early_and_late_codes_fail(server: Server) -> None:
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="totp")
        totp = _totp(provisioning)
        import time

        now = time.time()
        for when in (now - 120, now + 120):
            r = _verify(c, blob, serial, totp.at(when))
            assert r.json()["data"]["valid"] is False
        wrong = str((int(totp.now()) + 1) % 10**6).zfill(6)
        assert _verify(c, blob, serial, wrong).json()["data"] == {
            "valid": False,
            "reason": "mismatch",
        }


def test_hotp_counter_advances(server: Server) -> None:
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="hotp")
        hotp = pyotp.parse_uri(provisioning["otpauth_uri"])
        assert isinstance(hotp, pyotp.HOTP)
        r = _verify(c, blob, serial, hotp.at(2), counter=0, window=3).json()["data"]
        assert r == {"valid": True, "counter": 2, "next_counter": 3, "drift": 2}
        assert _verify(c, blob, serial, hotp.at(1), counter=3).json()["data"]["valid"] is False
        assert _verify(c, blob, serial, hotp.at(3)).json()["data"]["counter"] == 3


def test_binding_mismatch_is_400(server: Server) -> None:
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="totp")
        code = _totp(provisioning).now()
        for field, value in (
            ("token_serial", "other"),
            ("app_id", "other-app"),
            ("dfp_hash", "beef"),
        ):
            body = {
                "encrypted_seed": blob,
                "token_serial": serial,
                **IDENT,
                "otp": code,
                field: value,
            }
            r = c.post("/v1/otp/verify/otp-seeds", json=body)
            assert r.status_code == 400, field
            assert "bound to another" in r.json()["errors"][0]


def test_tampered_seed_is_400(server: Server) -> None:
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="totp")
        prefix, _, body = blob.rpartition(":")
        tampered = f"{prefix}:{body[:40]}{'A' if body[40] != 'A' else 'B'}{body[41:]}"
        r = _verify(c, tampered, serial, _totp(provisioning).now())
        assert r.status_code == 400


def test_lockout_after_consecutive_failures(server: Server) -> None:
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="totp")
        code = _totp(provisioning).now()
        wrong = str((int(code) + 1) % 10**6).zfill(6)
        reasons = [_verify(c, blob, serial, wrong).json()["data"]["reason"] for _ in range(5)]
        assert reasons == ["mismatch"] * 5
        # Locked now: even the right code is refused, and says so.
        assert _verify(c, blob, serial, code).json()["data"] == {"valid": False, "reason": "locked"}


def test_device_public_key_keeps_seed_out_of_the_response(server: Server) -> None:
    device = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = device.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with server.client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="totp", device_public_key=pem.decode())
        assert "otpauth_uri" not in provisioning
        import base64

        digest = hashes.SHA256() if provisioning["wrapping"] == "RSA-OAEP-256" else hashes.SHA1()
        seed = device.decrypt(
            base64.b64decode(provisioning["device_wrapped_seed"]),
            padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None),
        )
        assert len(seed) == 20
        code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
        assert _verify(c, blob, serial, code).json()["data"]["valid"] is True


def test_rotation_keeps_old_seeds_and_rewrap_moves_them(server: Server) -> None:
    with server.client("token-management") as c, server.client("security-officer") as officer:
        blob, provisioning, serial = _create(c, kind="hotp")
        hotp = pyotp.parse_uri(provisioning["otpauth_uri"])
        assert isinstance(hotp, pyotp.HOTP)
        rotated = officer.post("/v1/transit/keys/otp-seeds/rotate")
        assert rotated.status_code == 200, rotated.text
        latest = rotated.json()["data"]["latest_version"]
        assert _verify(c, blob, serial, hotp.at(0), counter=0).json()["data"]["valid"] is True
        r = c.post("/v1/transit/rewrap/otp-seeds", json={"ciphertext": blob})
        assert r.status_code == 200, r.text
        new_blob = r.json()["data"]["ciphertext"]
        assert new_blob.startswith(f"vault:v{latest}:")
        # Same seed, same ledger: the next code verifies, the used one stays used.
        assert _verify(c, new_blob, serial, hotp.at(1), counter=1).json()["data"]["valid"] is True
        assert (
            _verify(c, new_blob, serial, hotp.at(0), counter=0).json()["data"]["reason"]
            == "replayed"
        )


def test_other_services_may_not_verify(server: Server) -> None:
    with server.client("payout-gateway") as c:
        r = c.post(
            "/v1/otp/verify/otp-seeds",
            json={"encrypted_seed": "vault:v1:AA==", "token_serial": "x", "otp": "123456"},
        )
        assert r.status_code == 403


def test_one_acceptance_under_a_race_across_two_processes(server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    second = Server(settings)
    try:
        with server.client("token-management") as c:
            blob, provisioning, serial = _create(c, kind="totp")
        code = _totp(provisioning).now()
        body = {"encrypted_seed": blob, "token_serial": serial, **IDENT, "otp": code}
        clients = [server.client("token-management"), second.client("token-management")]

        def attempt(i: int) -> dict[str, Any]:
            r = clients[i % 2].post("/v1/otp/verify/otp-seeds", json=body)
            assert r.status_code == 200, r.text
            return dict(r.json()["data"])

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(attempt, range(50)))
        for cl in clients:
            cl.close()
    finally:
        second.stop()
    accepted = [r for r in results if r["valid"]]
    assert len(accepted) == 1
    assert all(r["reason"] == "replayed" for r in results if not r["valid"])
