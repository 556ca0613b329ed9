"""Several replicas on one PostgreSQL database and one token: whatever one replica wrapped,
another unwraps, and an OTP sent to all of them at once is accepted exactly once."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.replicas import (
    OTP_KEY,
    HotpToken,
    b64,
    conformance_key,
    create_key,
    fresh_client,
    replicas,
)

pytestmark = pytest.mark.e2e


def test_what_one_replica_encrypts_the_other_decrypts(settings, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    with replicas(settings, pg_database) as (a, b):
        key = conformance_key(a)
        with (
            fresh_client(a, "transit-conformance") as ca,
            fresh_client(b, "transit-conformance") as cb,
        ):
            for i in range(8):
                writer, reader = (ca, cb) if i % 2 == 0 else (cb, ca)
                plaintext, ad = b64(f"share {i}".encode()), b64(f"user-{i}".encode())
                r = writer.post(
                    f"/v1/transit/encrypt/{key}",
                    json={"plaintext": plaintext, "associated_data": ad},
                )
                assert r.status_code == 200, r.text
                ciphertext = r.json()["data"]["ciphertext"]
                r = reader.post(
                    f"/v1/transit/decrypt/{key}",
                    json={"ciphertext": ciphertext, "associated_data": ad},
                )
                assert r.status_code == 200, r.text
                assert r.json()["data"]["plaintext"] == plaintext

            # A data key made on one replica is the same key when the other unwraps it.
            r = cb.post(f"/v1/transit/datakey/plaintext/{key}", json={"bits": 256})
            assert r.status_code == 200, r.text
            made = r.json()["data"]
            r = ca.post(f"/v1/transit/decrypt/{key}", json={"ciphertext": made["ciphertext"]})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["plaintext"] == made["plaintext"]
            r = ca.post(f"/v1/transit/datakey/wrapped/{key}", json={"bits": 512})
            assert r.status_code == 200, r.text
            assert "plaintext" not in r.json()["data"]
            r = cb.post(
                f"/v1/transit/decrypt/{key}", json={"ciphertext": r.json()["data"]["ciphertext"]}
            )
            assert r.status_code == 200, r.text
            assert len(r.json()["data"]["plaintext"]) == 88  # 64 bytes, base64

            # A version made on one replica decrypts on the other at once (the ciphertext names
            # a version newer than its cache knows, so it reads the key again).
            with a.client("security-officer") as officer:
                assert officer.post(f"/v1/transit/keys/{key}/rotate").status_code == 200
            # Encryption moves to v2 once the writer's cache has expired (VAULT_KEY_CACHE_TTL).
            deadline = time.monotonic() + 60
            while True:
                r = ca.post(
                    f"/v1/transit/encrypt/{key}", json={"plaintext": b64(b"after rotation")}
                )
                assert r.status_code == 200, r.text
                if r.json()["data"]["key_version"] == 2:
                    break
                assert time.monotonic() < deadline, "encryption never moved to version 2"
                time.sleep(0.1)
            r = cb.post(
                f"/v1/transit/decrypt/{key}", json={"ciphertext": r.json()["data"]["ciphertext"]}
            )
            assert r.status_code == 200, r.text
            assert r.json()["data"]["plaintext"] == b64(b"after rotation")


SENDERS = 8


def _race(
    pool: concurrent.futures.Executor, clients: list[httpx.Client], token: HotpToken, counter: int
) -> list[dict[str, Any]]:
    """The same code sent by ``SENDERS`` threads at once, spread over the clients."""
    start = threading.Barrier(SENDERS)

    def send(i: int) -> dict[str, Any]:
        start.wait(timeout=60)
        r = token.verify(clients[i % len(clients)], counter)
        assert r.status_code == 200, r.text
        return dict(r.json()["data"])

    return list(pool.map(send, range(SENDERS)))


def test_an_otp_sent_to_every_replica_at_once_is_accepted_once(settings, pg_database: str) -> None:  # type: ignore[no-untyped-def]
    with replicas(settings, pg_database) as (a, b):
        create_key(a, OTP_KEY, "otp-seed")
        tokens = [HotpToken(a) for _ in range(3)]
        clients = [fresh_client(server, "token-management") for server in (a, b)]
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=SENDERS) as pool:
                for token in tokens:
                    for counter in range(3):
                        results = _race(pool, clients, token, counter)
                        accepted = [r for r in results if r["valid"]]
                        assert len(accepted) == 1, results
                        assert accepted[0]["counter"] == counter
                        # Each replay is a failed attempt: past the limit, the token locks.
                        assert {r["reason"] for r in results if not r["valid"]} <= {
                            "replayed",
                            "locked",
                        }
                        assert token.state(clients[0])["counter"] == counter
                        token.unlock(clients[1])
        finally:
            for client in clients:
                client.close()
