"""The fast path and the Litestar routes answer alike.

A request with a content length takes the fast path; the same request sent chunked (no
content length) goes through Litestar. Both must give the same status and body."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, mint

pytestmark = pytest.mark.e2e


def _chunked(payload: dict[str, Any]) -> Iterator[bytes]:
    yield json.dumps(payload).encode()


def _both(
    client: httpx.Client, path: str, payload: dict[str, Any]
) -> tuple[httpx.Response, httpx.Response]:
    fast = client.post(path, json=payload)
    slow = client.post(
        path, content=_chunked(payload), headers={"content-type": "application/json"}
    )
    return fast, slow


def _comparable(r: httpx.Response) -> tuple[int, Any]:
    body = r.json()
    if "data" in body:
        data = dict(body["data"])
        for random_field in ("ciphertext", "signature"):
            if random_field in data:
                data[random_field] = data[random_field][:9]  # vault:vN: prefix; the rest is random
        return r.status_code, data
    return r.status_code, body


@pytest.mark.parametrize(
    ("service", "path", "payload"),
    [
        (
            "backup-service",
            "/v1/transit/encrypt/backup-share",
            {"plaintext": base64.b64encode(b"x").decode()},
        ),
        ("backup-service", "/v1/transit/encrypt/backup-share", {"plaintext": "not base64!"}),
        ("backup-service", "/v1/transit/decrypt/backup-share", {"ciphertext": "vault:v1:AAAA"}),
        ("backup-service", "/v1/transit/decrypt/backup-share", {"ciphertext": ""}),
        ("identity-service", "/v1/transit/decrypt/backup-share", {"ciphertext": "vault:v1:AAAA"}),
        ("backup-service", "/v1/transit/encrypt/no-such-key", {"plaintext": "eA=="}),
        ("payout-gateway", "/v1/transit/hmac/payout-digest", {"input": "aGVsbG8="}),
        ("payout-gateway", "/v1/transit/hmac/payout-digest", {}),
        ("payout-gateway", "/v1/transit/sign/payout-signing", {"input": "aGVsbG8="}),
        ("payout-gateway", "/v1/transit/sign/backup-share", {"input": "aGVsbG8="}),
        (
            "token-management",
            "/v1/otp/verify/otp-seeds",
            {"encrypted_seed": "vault:v1:AAAA", "token_serial": "t", "otp": "123456"},
        ),
    ],
)
def test_same_answer_on_both_paths(
    server: Server, service: str, path: str, payload: dict[str, Any]
) -> None:
    with server.client(service) as c:
        fast, slow = _both(c, path, payload)
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert _comparable(fast) == _comparable(slow)


def test_authentication_failures_alike(server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    token = mint(settings, "backup-service")
    payload = {"plaintext": "eA=="}
    for headers in ({}, {"X-Vault-Token": token[:-4] + "AAAA"}, {"X-Vault-Token": "garbage"}):
        with httpx.Client(base_url=server.url, headers=headers) as c:
            fast, slow = _both(c, "/v1/transit/encrypt/backup-share", payload)
        assert fast.status_code == slow.status_code == 401
        assert fast.json() == slow.json()


def test_batches_and_malformed_bodies_take_the_full_route(server: Server) -> None:
    with server.client("backup-service") as c:
        batch = c.post(
            "/v1/transit/encrypt/backup-share", json={"batch_input": [{"plaintext": "eA=="}]}
        )
        assert batch.status_code == 200
        assert batch.json()["data"]["batch_results"][0]["ciphertext"].startswith("vault:v")
        broken = c.post(
            "/v1/transit/encrypt/backup-share",
            content=b"{",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["errors"]
