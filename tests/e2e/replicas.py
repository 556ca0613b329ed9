"""Helpers for tests that run several replicas (server processes) on one database."""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pyotp

from tests.conftest import Server, mint

IDENT = {"app_id": "wallet-app", "dfp_hash": "c0ffee"}
OTP_KEY = "otp-seeds"
DEADLINE = (
    90.0  # seconds to wait for a fault to show or to pass; generous for a loaded 2-core machine
)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


def health(server: Server) -> int:
    return httpx.get(f"{server.url}/v1/sys/health", timeout=30).status_code


@contextlib.contextmanager
def replicas(
    settings: Any, database_url: str, count: int = 2, workers: int = 2
) -> Iterator[list[Server]]:
    """``count`` servers of ``workers`` processes each, all on ``database_url`` and the
    session's token; stopped (or what is left of them) at the end."""
    started: list[Server] = []
    try:
        for _ in range(count):
            env = {"VAULT_DATABASE_URL": database_url}
            started.append(Server(settings, workers=workers, env=env))
        yield started
    finally:
        for server in started:
            if server.proc.poll() is None:
                server.stop()
            else:
                server.log.close()


def fresh_client(server: Server, service: str) -> httpx.Client:
    """A client that opens a new connection for every request, so that requests spread over
    the server's workers (a kept-alive connection stays with one worker)."""
    return httpx.Client(
        base_url=server.url,
        headers={"X-Vault-Token": mint(server.settings, service)},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def create_key(server: Server, name: str, key_type: str) -> None:
    """A key in this database (a fresh database has none), made by the security officer."""
    with server.client("security-officer") as officer:
        r = officer.post(f"/v1/transit/keys/{name}", json={"type": key_type})
        assert r.status_code in (200, 204), r.text


def conformance_key(server: Server) -> str:
    name = f"conformance-{uuid.uuid4().hex[:12]}"
    create_key(server, name, "aes256-gcm96")
    return name


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class HotpToken:
    """One software token: its encrypted seed and the device side that computes its codes."""

    def __init__(self, server: Server) -> None:
        self.serial = f"swk-{uuid.uuid4()}"
        with server.client("token-management") as c:
            r = c.post(
                f"/v1/otp/seeds/{OTP_KEY}",
                json={"token_serial": self.serial, **IDENT, "kind": "hotp"},
            )
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        self.blob: str = data["encrypted_seed"]
        device = pyotp.parse_uri(data["provisioning"]["otpauth_uri"])
        assert isinstance(device, pyotp.HOTP)
        self.device = device

    def body(self, counter: int) -> dict[str, Any]:
        """The code for ``counter``, sent with the counter the caller expects (as the
        token-management service does), so that a second acceptance is told apart as a
        replay rather than a mismatch."""
        return {
            "encrypted_seed": self.blob,
            "token_serial": self.serial,
            **IDENT,
            "otp": self.device.at(counter),
            "counter": counter,
        }

    def verify(self, client: httpx.Client, counter: int) -> httpx.Response:
        return client.post(f"/v1/otp/verify/{OTP_KEY}", json=self.body(counter))

    def state(self, client: httpx.Client) -> dict[str, Any]:
        """The seed's ledger (the last accepted counter, failures, lock) as the vault keeps it."""
        r = client.post(f"/v1/otp/seeds/{OTP_KEY}/state", json={"encrypted_seed": self.blob})
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()["data"]
        return data

    def unlock(self, client: httpx.Client) -> None:
        """Clear the failures replays count as (each replay is a failed attempt)."""
        r = client.post(f"/v1/otp/seeds/{OTP_KEY}/unlock", json={"encrypted_seed": self.blob})
        assert r.status_code == 200, r.text
