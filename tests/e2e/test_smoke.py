from __future__ import annotations

import base64

import pytest

pytestmark = pytest.mark.e2e


def test_health_needs_no_token(server) -> None:  # type: ignore[no-untyped-def]
    with server.client(None) as c:
        r = c.get("/v1/sys/health")
    assert r.status_code == 200
    assert r.json()["initialized"] is True
    assert r.json()["sealed"] is False


def test_encrypt_decrypt_roundtrip_with_associated_data(server) -> None:  # type: ignore[no-untyped-def]
    plaintext = base64.b64encode(b"third share").decode()
    ad = base64.b64encode(b"user-42|pubkey").decode()
    with server.client("backup-service") as c:
        r = c.post(
            "/v1/transit/encrypt/backup-share", json={"plaintext": plaintext, "associated_data": ad}
        )
        assert r.status_code == 200, r.text
        ct = r.json()["data"]["ciphertext"]
        assert ct.startswith("vault:v")
        r = c.post(
            "/v1/transit/decrypt/backup-share", json={"ciphertext": ct, "associated_data": ad}
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["plaintext"] == plaintext
