"""The token-management service's view: real server processes, real SoftHSM2, pyotp codes."""

from __future__ import annotations

import concurrent.futures
import urllib.parse
import uuid
from collections.abc import Iterator
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


def test_rotation_keeps_old_seeds_and_rewrap_is_refused(server: Server) -> None:
    """A seed unwraps only into a non-extractable object, so it can never be wrapped under
    another version: rewrap says so, and provisioning again moves a token to the latest."""
    with server.client("token-management") as c, server.client("security-officer") as officer:
        blob, provisioning, serial = _create(c, kind="hotp")
        hotp = pyotp.parse_uri(provisioning["otpauth_uri"])
        assert isinstance(hotp, pyotp.HOTP)
        rotated = officer.post("/v1/transit/keys/otp-seeds/rotate")
        assert rotated.status_code == 200, rotated.text
        latest = rotated.json()["data"]["latest_version"]
        assert _verify(c, blob, serial, hotp.at(0), counter=0).json()["data"]["valid"] is True
        r = c.post("/v1/transit/rewrap/otp-seeds", json={"ciphertext": blob})
        assert r.status_code == 403  # token-management no longer holds rewrap on otp-seeds
        new_blob, _, _ = _create(c, kind="hotp")
        assert new_blob.startswith(f"vault:v{latest}:")


def test_rewrap_of_seeds_is_400_with_the_reason(server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    """For a service allowed both rewrap and OTP (transit-conformance's grants, on a key of
    its own): 400 and the re-provisioning path, never a re-wrapped seed."""
    name = f"conformance-otp-{uuid.uuid4().hex[:8]}"
    with server.client("transit-conformance") as c:
        assert c.post(f"/v1/transit/keys/{name}", json={"type": "otp-seed"}).status_code in (
            200,
            204,
        )
        r = c.post(f"/v1/transit/rewrap/{name}", json={"ciphertext": "vault:v1:AAAA"})
        assert r.status_code == 400
        assert "cannot be rewrapped" in r.json()["errors"][0]
        assert "provision the token again" in r.json()["errors"][0]
        c.post(f"/v1/transit/keys/{name}/config", json={"deletion_allowed": True})
        c.delete(f"/v1/transit/keys/{name}")


def test_other_services_may_not_verify(server: Server) -> None:
    with server.client("payout-gateway") as c:
        r = c.post(
            "/v1/otp/verify/otp-seeds",
            json={"encrypted_seed": "vault:v1:AA==", "token_serial": "x", "otp": "123456"},
        )
        assert r.status_code == 403


@pytest.fixture
def two_servers(settings, database_url: str) -> Iterator[tuple[Server, Server]]:  # type: ignore[no-untyped-def]
    """Two server processes of two workers each on one fresh database (SQLite, PostgreSQL),
    with the otp-seeds key made in it (its HSM objects are destroyed afterwards)."""
    env = {"VAULT_DATABASE_URL": database_url}
    first = Server(settings, workers=2, env=env)
    try:
        second = Server(settings, workers=2, env=env)
    except BaseException:
        first.stop()
        raise
    try:
        with first.client("security-officer") as officer:
            r = officer.post("/v1/transit/keys/otp-seeds", json={"type": "otp-seed"})
            assert r.status_code in (200, 204), r.text
            yield first, second
            officer.post("/v1/transit/keys/otp-seeds/config", json={"deletion_allowed": True})
            officer.delete("/v1/transit/keys/otp-seeds")
    finally:
        second.stop()
        first.stop()


def test_one_acceptance_under_a_race_across_two_processes(
    two_servers: tuple[Server, Server],
) -> None:
    with two_servers[0].client("token-management") as c:
        blob, provisioning, serial = _create(c, kind="totp")
    code = _totp(provisioning).now()
    body = {"encrypted_seed": blob, "token_serial": serial, **IDENT, "otp": code}
    clients = [server.client("token-management") for server in two_servers]

    def attempt(i: int) -> dict[str, Any]:
        r = clients[i % 2].post("/v1/otp/verify/otp-seeds", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json()["data"])

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(attempt, range(50)))
    finally:
        for cl in clients:
            cl.close()
    accepted = [r for r in results if r["valid"]]
    assert len(accepted) == 1
    # Every other one is a replay, which counts as a failure: after five the seed locks.
    refused = [r["reason"] for r in results if not r["valid"]]
    assert set(refused) <= {"replayed", "locked"}
    assert "replayed" in refused


def test_a_deactivated_seed_never_verifies_on_another_process(
    two_servers: tuple[Server, Server],
) -> None:
    first, second = two_servers
    with first.client("token-management") as a, second.client("token-management") as b:
        blob, provisioning, serial = _create(a, kind="hotp")
        hotp = pyotp.parse_uri(provisioning["otpauth_uri"])
        assert isinstance(hotp, pyotp.HOTP)
        assert _verify(b, blob, serial, hotp.at(0)).json()["data"]["valid"] is True
        r = a.post("/v1/otp/seeds/otp-seeds/deactivate", json={"encrypted_seed": blob})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["deactivated"] is True
        # At once, on the other process (both of its workers), whatever the code.
        for n in range(1, 7):
            assert _verify(b, blob, serial, hotp.at(n)).json()["data"] == {
                "valid": False,
                "reason": "deactivated",
            }
        state = b.post("/v1/otp/seeds/otp-seeds/state", json={"encrypted_seed": blob})
        assert state.json()["data"]["deactivated"] is True
        assert (
            b.post("/v1/otp/seeds/otp-seeds/unlock", json={"encrypted_seed": blob}).status_code
            == 400
        )
        resync = b.post(
            "/v1/otp/seeds/otp-seeds/resync",
            json={"encrypted_seed": blob, "otp": hotp.at(8), "next_otp": hotp.at(9)},
        )
        assert resync.json()["data"] == {"valid": False, "reason": "deactivated"}
