"""Known secrets sent through every endpoint (and the secrets the vault hands out) never show
up in any log stream or any stored row, in any encoding: plaintexts, associated data naming a
user, data keys, random bytes, OTP seeds and codes, partner payloads, HMAC and signature
inputs, the service tokens, the PIN."""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import MetaData

from tests.e2e.test_payout_api import partner_seals
from tests.e2e.trust_support import b64, servers, with_keys
from vault.store import make_engine

pytestmark = [
    pytest.mark.e2e,
    # joserfc (the partner's side of a sealed message) warns about implicit key types.
    pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning"),
]
IDENT = {"app_id": "canary-app", "dfp_hash": "canary-dfp"}


class Canaries:
    """Every secret of the run, and each form it could leak in."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}

    def new(self, name: str, size: int = 24) -> bytes:
        value = (
            f"CANARY-{name}-{uuid.uuid4().hex}".encode()[:size] if size > 20 else os.urandom(size)
        )
        self.secrets[name] = value
        return value

    def add(self, name: str, value: bytes) -> None:
        self.secrets[name] = value

    def forms(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, value in self.secrets.items():
            found[f"{name} (hex)"] = value.hex()
            found[f"{name} (base64)"] = base64.b64encode(value).decode().rstrip("=")
            found[f"{name} (base64url)"] = base64.urlsafe_b64encode(value).decode().rstrip("=")
            found[f"{name} (base32)"] = base64.b32encode(value).decode().rstrip("=")
            if value.isascii() and len(value) >= 6:
                found[name] = value.decode()
        return found


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, (response.request.url, response.text)
    data: dict[str, Any] = response.json()["data"]
    return data


def exercise(settings: Any, replica: Any, canaries: Canaries) -> None:
    plaintext = canaries.new("plaintext", 40)
    user = canaries.new("user", 30).decode()
    ad = b64(f'{{"share":1,"user_id":"{user}"}}'.encode())
    with replica.client("backup-service") as c:
        canaries.add("backup token", c.headers["x-vault-token"].encode())
        made = ok(
            c.post(
                "/v1/transit/encrypt/backup-share",
                json={"plaintext": b64(plaintext), "associated_data": ad},
            )
        )
        batch = ok(
            c.post(
                "/v1/transit/encrypt/backup-share",
                json={"batch_input": [{"plaintext": b64(plaintext), "associated_data": ad}] * 2},
            )
        )
        assert len(batch["batch_results"]) == 2
        assert ok(
            c.post(
                "/v1/transit/decrypt/backup-share",
                json={"ciphertext": made["ciphertext"], "associated_data": ad},
            )
        )["plaintext"] == b64(plaintext)
        ok(
            c.post(
                "/v1/transit/rewrap/backup-share",
                json={"ciphertext": made["ciphertext"], "associated_data": ad},
            )
        )
        wrong = c.post(
            "/v1/transit/decrypt/backup-share",
            json={"ciphertext": made["ciphertext"], "associated_data": b64(plaintext)},
        )
        assert wrong.status_code == 400
        unencoded = c.post(
            "/v1/transit/encrypt/backup-share", json={"plaintext": plaintext.decode()}
        )
        assert unencoded.status_code == 400
        data_key = ok(
            c.post("/v1/transit/datakey/plaintext/backup-share", json={"associated_data": ad})
        )
        canaries.add("data key", base64.b64decode(data_key["plaintext"]))
        ok(c.post("/v1/transit/datakey/wrapped/backup-share", json={}))
    with replica.client("recovery-service") as c:
        canaries.add("recovery token", c.headers["x-vault-token"].encode())
        ok(
            c.post(
                "/v1/transit/decrypt/backup-share",
                json={"ciphertext": made["ciphertext"], "associated_data": ad},
            )
        )

    mac_input = canaries.new("hmac-input", 40)
    sign_input = canaries.new("sign-input", 40)
    field_value = canaries.new("field", 30).decode()
    blind_value = canaries.new("blind", 30).decode()
    payload = canaries.new("payload", 30).decode()
    with replica.client("payout-gateway") as c:
        mac = ok(c.post("/v1/transit/hmac/payout-digest", json={"input": b64(mac_input)}))["hmac"]
        assert ok(
            c.post("/v1/transit/verify/payout-digest", json={"input": b64(mac_input), "hmac": mac})
        )["valid"]
        signature = ok(c.post("/v1/transit/sign/payout-signing", json={"input": b64(sign_input)}))[
            "signature"
        ]
        assert ok(
            c.post(
                "/v1/transit/verify/payout-signing",
                json={"input": b64(sign_input), "signature": signature},
            )
        )["valid"]
        assert not ok(
            c.post(
                "/v1/transit/verify/payout-signing",
                json={"input": b64(mac_input), "signature": signature},
            )
        )["valid"]
        digest = ok(
            c.post("/v1/transit/digest/payout-digest", json={"fields": [["amount", field_value]]})
        )["digest"]
        ok(
            c.post(
                "/v1/transit/digest/payout-digest/verify",
                json={"fields": [["amount", field_value]], "digest": digest},
            )
        )
        ok(
            c.post(
                "/v1/transit/blind-index/payout-digest",
                json={"value": blind_value, "normalization": "exact"},
            )
        )
        canaries.add(
            "random", base64.b64decode(ok(c.post("/v1/transit/random/32", json={}))["random_bytes"])
        )
        ok(c.post("/v1/payout/seal/acme-bank", json={"payload": payload}))
        opened = ok(
            c.post(
                "/v1/payout/open/globex-pay",
                json={"jwe": partner_seals(c, settings, "globex-pay", payload=payload)},
            )
        )
        assert opened["payload"] == payload

    seed = canaries.new("seed", 20)
    with replica.client("token-management") as c:
        serial = f"canary-{uuid.uuid4().hex[:6]}"
        blob = ok(
            c.post(
                "/v1/otp/seeds/otp-seeds/import",
                json={"token_serial": serial, **IDENT, "kind": "totp", "seed_hex": seed.hex()},
            )
        )["encrypted_seed"]
        code = pyotp.TOTP(base64.b32encode(seed).decode()).now()
        canaries.add("otp", code.encode())
        verify = {"encrypted_seed": blob, "token_serial": serial, **IDENT}
        assert ok(c.post("/v1/otp/verify/otp-seeds", json={**verify, "otp": code}))["valid"]
        assert not ok(c.post("/v1/otp/verify/otp-seeds", json={**verify, "otp": code}))["valid"]
        other = c.post(
            "/v1/otp/verify/otp-seeds", json={**verify, "token_serial": "someone-else", "otp": code}
        )
        assert other.status_code == 400
        made_seed = ok(
            c.post("/v1/otp/seeds/otp-seeds", json={"token_serial": serial + "-new", **IDENT})
        )
        text = made_seed["provisioning"]["seed_base32"]
        canaries.add("provisioned seed", base64.b32decode(text + "=" * (-len(text) % 8)))

    with replica.client("security-officer") as c:
        name = f"canary-{uuid.uuid4().hex[:6]}"
        ok(c.post(f"/v1/transit/keys/{name}"))
        ok(c.post(f"/v1/transit/keys/{name}/rotate"))
        ok(c.get(f"/v1/transit/keys/{name}"))


def stored_values(url: str) -> list[tuple[str, str]]:
    """Every value of every row of every table, as text (bytes as hex and as Latin-1)."""
    engine = make_engine(url)
    found: list[tuple[str, str]] = []
    try:
        tables = MetaData()
        tables.reflect(engine)
        with engine.connect() as conn:
            for table in tables.sorted_tables:
                for row in conn.execute(table.select()):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            raw = bytes(value)
                            found += [(table.name, raw.hex()), (table.name, raw.decode("latin-1"))]
                        elif value is not None:
                            found.append((table.name, str(value)))
    finally:
        engine.dispose()
    return found


def test_no_secret_reaches_a_log_or_a_row(settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with_keys(settings, database_url)
    canaries = Canaries()
    pin = settings.user_pin()
    canaries.add("pin", pin.encode())
    with servers(settings, database_url, count=1, VAULT_PIN=pin) as (replica,):
        exercise(settings, replica, canaries)
        with replica.client(None) as anonymous:
            assert anonymous.get("/metrics").status_code == 200
            control = anonymous.get("/v1/transit/keys").headers["x-request-id"]
    log = replica.read_log()  # once the server has stopped: every line is written
    rows = stored_values(database_url)
    # The search reaches what it should: a request id is in the request log and the audit rows.
    assert control in log
    assert any(table == "audit_records" and control in value for table, value in rows)
    leaks = [
        (name, where)
        for name, form in canaries.forms().items()
        for where, text in [("server log", log), *rows]
        if form in text
    ]
    assert leaks == []
