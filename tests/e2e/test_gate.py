"""The one gate, tried as an attacker and a newcomer would: no request can stop the server,
bad input is a JSON 4xx on every route, a bad token is refused before the body is read, and
however a body arrives (chunked or not) the answer is the same."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import routes
from tests.conftest import Server, mint

pytestmark = pytest.mark.e2e

B64 = base64.b64encode(b"share").decode()
BAD_STATUS_CODES = [1000, 99, -6172, 101, 204, 302, 304, 599, 600, 999, 0, 2**31 - 1]
REVERTING = (
    "invalid HTTP response code override from partial_failure_response_code, reverting to 400"
)


@pytest.fixture(scope="module")
def two_workers(settings) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    srv = Server(settings, workers=2)
    yield srv
    srv.stop()


def _worker_pids(server: Server) -> list[int]:
    """The server's worker processes (granian's children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == server.proc.pid:
            pids.append(int(entry.name))
    return pids


# -- no request can stop the server --------------------------------------------------------


def test_a_partial_failure_code_out_of_range_reverts_to_400(two_workers: Server) -> None:
    """Once two such requests stopped the whole server (granian panicked on the status)."""
    batch = [{"plaintext": B64}, {"plaintext": "!!not base64"}]
    with two_workers.client("backup-service") as c:
        for code in BAD_STATUS_CODES:
            for _ in range(2):
                r = c.post(
                    "/v1/transit/encrypt/backup-share",
                    json={"batch_input": batch, "partial_failure_response_code": code},
                )
                assert r.status_code == 400, (code, r.text)
                assert r.json()["warnings"] == [REVERTING]
        r = c.post(
            "/v1/transit/encrypt/backup-share",
            json={"batch_input": batch, "partial_failure_response_code": 207},
        )
        assert r.status_code == 207
        assert (
            c.post("/v1/transit/encrypt/backup-share", json={"plaintext": B64}).status_code == 200
        )
    assert two_workers.proc.poll() is None


def test_a_worker_starts_and_recovers_while_the_database_is_away(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The database is away (its directory does not exist yet): the server starts, answers
    503, survives a killed worker's restart, and serves once the database is there."""
    from vault import store

    db_dir = tmp_path / "later"
    url = f"sqlite:///{db_dir / 'vault.db'}"
    srv = Server(settings, workers=2, env={"VAULT_DATABASE_URL": url}, healthy=False)
    try:
        with srv.client("backup-service") as c:
            r = c.post("/v1/transit/encrypt/backup-share", json={"plaintext": B64})
            assert r.status_code == 503, r.text
            assert r.json() == {"errors": ["database unavailable"]}
            assert httpx.get(f"{srv.url}/v1/sys/health").status_code == 503
            victim = _worker_pids(srv)[0]
            os.kill(victim, signal.SIGKILL)
            time.sleep(3)  # granian respawns the worker; its start needs no database
            assert srv.proc.poll() is None
            assert all(c.get("/v1/sys/live").status_code == 200 for _ in range(6))
            db_dir.mkdir()
            engine = store.make_engine(url)
            store.migrate(engine)
            engine.dispose()
            with srv.client("security-officer") as officer:
                created = officer.post("/v1/transit/keys/backup-share", json={})
            assert created.status_code == 200, created.text
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = c.post("/v1/transit/encrypt/backup-share", json={"plaintext": B64})
                if r.status_code == 200:
                    break
                time.sleep(0.3)
            assert r.status_code == 200, r.text
            assert httpx.get(f"{srv.url}/v1/sys/health").status_code == 200
    finally:
        srv.stop()


# -- bad input is a JSON 4xx ---------------------------------------------------------------


def _caller(path: str) -> tuple[str, str]:
    """A service allowed on the route, and the key (or partner) it names there."""
    if path.startswith("/v1/otp/"):
        return "token-management", "otp-seeds"
    if path.startswith("/v1/payout/"):
        return "payout-gateway", "acme-bank"
    return "transit-conformance", "conformance-gate"


def all_routes(*, with_body: bool) -> list[tuple[str, str, str]]:
    """(method, path, service) of every route the gate serves (with a body, or without),
    path parameters filled so that the service is allowed there."""
    fill = {
        "kind": "plaintext",
        "hash_algorithm": "sha2-256",
        "algorithm": "sha2-256",
        "count": "16",
        "source": "platform",
    }
    found = []
    for route in routes().routes:
        for handler in getattr(route, "route_handlers", ()):
            spec = handler.opt.get("route")
            if spec is None or spec.public or spec.any_service:
                continue
            if ("data" in handler.parsed_fn_signature.parameters) != with_body:
                continue
            path = route.path_format
            service, name = _caller(path)
            for param, value in {**fill, "name": name, "partner": name}.items():
                path = path.replace("{" + param + "}", value)
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                found.append((method, path, service))
    return sorted(set(found))


BODY_ROUTES = all_routes(with_body=True)
BAD_BODIES = {
    "invalid UTF-8": b'{"plaintext": "\xff\xfe", "input": "\xff", "token_serial": "\xff"}',
    "lone surrogate": b'{"plaintext": "\\ud800", "input": "\\udfff", "token_serial": "\\ud800"}',
    "nested 2000 deep": b'{"plaintext": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    "body nested 100000 deep": b"[" * 100000,
    # Every numeric field a route declares, out of range (routes ignore fields they lack).
    "number out of range": json.dumps(
        dict.fromkeys(
            (
                "key_version",
                "bits",
                "bytes",
                "min_decryption_version",
                "counter",
                "window",
                "digits",
                "period",
                "auto_rotate_period",
                "payload",
            ),
            "__NUMBER__",
        )
    )
    .replace('"__NUMBER__"', "1e999")
    .encode(),
    "huge integer": json.dumps(
        dict.fromkeys(
            (
                "key_version",
                "bits",
                "bytes",
                "min_decryption_version",
                "counter",
                "window",
                "digits",
                "period",
                "auto_rotate_period",
            ),
            10**26,
        )
    ).encode(),
    "not an object": b'"x"',
    "truncated": b'{"plaintext": ',
}


def test_every_body_route_is_known() -> None:
    assert len(BODY_ROUTES) >= 20, BODY_ROUTES


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_bodies_are_a_json_400_on_every_route(server: Server, case: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for method, path, service in BODY_ROUTES:
            token = mint(server.settings, service)
            r = c.request(
                method,
                path,
                content=BAD_BODIES[case],
                headers={"X-Vault-Token": token, "content-type": "application/json"},
            )
            assert r.status_code == 400, (case, method, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json"
            assert set(r.json()) == {"errors"}


@pytest.mark.parametrize(
    "period", ["1e999h", 1e20, 10**23, "1e400s", -1, "-1h", "P1D", True, 3599, 2**31]
)
def test_out_of_range_rotation_periods_change_nothing(server: Server, period: Any) -> None:
    name = f"conformance-{uuid.uuid4().hex[:10]}"
    with server.client("transit-conformance") as c:
        r = c.post(f"/v1/transit/keys/{name}", json={"auto_rotate_period": period})
        assert r.status_code == 400, r.text
        assert c.get(f"/v1/transit/keys/{name}").status_code == 404
        assert c.post(f"/v1/transit/keys/{name}").status_code == 200
        r = c.post(f"/v1/transit/keys/{name}/config", json={"auto_rotate_period": period})
        assert r.status_code == 400, r.text
        assert c.get(f"/v1/transit/keys/{name}").json()["data"]["auto_rotate_period"] == 0


def test_empty_encrypt_is_400_as_in_openbao(server: Server) -> None:
    with server.client("backup-service") as c:
        for body in ({}, None):
            r = c.post("/v1/transit/encrypt/backup-share", json=body)
            assert (r.status_code, r.json()) == (400, {"errors": ["missing plaintext to encrypt"]})
        r = c.post("/v1/transit/encrypt/backup-share", json={"plaintext": None})
        assert r.status_code == 200  # Vault: null is the empty message


def test_head_health(server: Server) -> None:
    r = httpx.head(f"{server.url}/v1/sys/health")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["x-request-id"]


# -- authentication before the body --------------------------------------------------------


def _raw_exchange(server: Server, head: bytes, body_part: bytes) -> bytes:
    """Send a request head and only the start of its body; read what comes back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body_part)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(("method", "path", "service"), BODY_ROUTES)
def test_a_bad_token_is_refused_before_the_body_is_read(
    server: Server, method: str, path: str, service: str
) -> None:
    """20 MiB announced, 4 bytes sent, a bad token: 401 at once (not 413, and no waiting
    for a body that never comes)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-Vault-Token: not-a-token\r\n"
        f"Content-Type: application/json\r\nContent-Length: {20 * 1024 * 1024}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _raw_exchange(server, head, b'{"pl')
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert time.monotonic() - started < 5
    assert answer.split(b"\r\n\r\n", 1)[1].startswith(b'{"errors":')


def test_an_oversized_body_with_a_good_token_is_413(server: Server) -> None:
    token = mint(server.settings, "backup-service")
    big = b'{"plaintext": "' + b"A" * (server.settings.max_body_bytes + 10) + b'"}'
    r = httpx.post(
        f"{server.url}/v1/transit/encrypt/backup-share",
        content=big,
        headers={"X-Vault-Token": token},
        timeout=30,
    )
    assert r.status_code == 413
    assert r.json() == {"errors": ["request body too large"]}


# -- chunked or not, the same answer ----------------------------------------------------


def _comparable(r: httpx.Response) -> tuple[int, Any]:
    body = r.json() if r.content else None
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        data = dict(body["data"])
        for versioned in ("ciphertext", "signature", "encrypted_seed"):
            if isinstance(data.get(versioned), str):
                data[versioned] = data[versioned][:9]  # vault:vN: — the rest is random
        for random_field in (
            "random_bytes",
            "plaintext",
            "jwe",
            "message_id",
            "issued_at",
            "provisioning",
        ):
            if random_field in data:
                data[random_field] = "<varies>"
        return r.status_code, data
    return r.status_code, body


@pytest.mark.parametrize(("method", "path", "service"), BODY_ROUTES)
def test_chunked_and_content_length_bodies_get_the_same_answer(
    server: Server, method: str, path: str, service: str
) -> None:
    payload = json.dumps({"plaintext": B64, "input": B64, "token_serial": "T-1"}).encode()
    with server.client(service) as c:
        plain = c.request(
            method, path, content=payload, headers={"content-type": "application/json"}
        )
        chunked = c.request(
            method,
            path,
            content=iter([payload[:7], payload[7:]]),
            headers={"content-type": "application/json"},
        )
    assert "content-length" not in chunked.request.headers
    assert _comparable(plain) == _comparable(chunked), (path, plain.text, chunked.text)
