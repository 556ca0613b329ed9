"""Two server processes (two workers each) on one token and one database — SQLite and
PostgreSQL — as replicas behind a load balancer: a rotation on one is usable on the other at
once, a raised ``min_decryption_version`` is enforced everywhere within the key cache time,
and a deleted key leaves no object on the token, whichever process made its versions.

Every request goes over a fresh connection, so both workers of each server take part.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, mint, token_objects

pytestmark = pytest.mark.e2e

CACHE_TTL = 1.0  # VAULT_KEY_CACHE_TTL's default, as documented in the README
ROUNDS = 25  # rotations per key, alternating replicas: each one a fresh chance of a stale cache
SERVICE = "transit-conformance"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Replica:
    """One server, asked over a fresh connection each time."""

    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        self.client = httpx.Client(
            base_url=server.url,
            headers={"X-Vault-Token": token},
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def post(self, path: str, **body: Any) -> httpx.Response:
        return self.client.post(f"/v1/transit/{path}", json=body)

    def data(self, path: str, **body: Any) -> Any:
        r = self.post(path, **body)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()["data"]


@contextlib.contextmanager
def two_servers(
    settings: Any, database_url: str, workers: int
) -> Iterator[tuple[Replica, Replica]]:
    env = {"VAULT_DATABASE_URL": database_url, "VAULT_KEY_CACHE_TTL": str(CACHE_TTL)}
    servers = [Server(settings, workers=workers, env=env)]
    try:
        servers.append(Server(settings, workers=workers, env=env))
        token = mint(settings, SERVICE)
        made = (Replica(servers[0], token), Replica(servers[1], token))
        yield made
        for replica in made:
            replica.client.close()
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def replicas(settings: Any, database_url: str) -> Iterator[tuple[Replica, Replica]]:
    with two_servers(settings, database_url, workers=2) as made:
        yield made


@pytest.fixture
def processes(settings: Any, tmp_path: Any) -> Iterator[tuple[Replica, Replica]]:
    """Two single-process servers: which process does what is up to the test."""
    from vault import store

    url = f"sqlite:///{tmp_path / 'vault.db'}"
    engine = store.make_engine(url)
    store.migrate(engine)
    engine.dispose()
    with two_servers(settings, url, workers=1) as made:
        yield made


def token_labels(settings: Any, names: list[str]) -> dict[str, int]:
    """How many objects of each key pkcs11-tool finds on the token."""
    found = dict.fromkeys(names, 0)
    for obj in token_objects(settings):
        for name in names:
            if obj.get("label", "").startswith(f"vault:{name}:"):
                found[name] += 1
    return found


def test_a_rotation_on_one_replica_is_usable_on_the_other_at_once(
    replicas: tuple[Replica, Replica],
) -> None:
    aes, ec = (f"conformance-rot-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("aes", "ec"))
    first = replicas[0]
    first.data(f"keys/{aes}")
    first.data(f"keys/{ec}", type="ecdsa-p256")
    message = b64(b"pay 100.00 EUR")
    failures: list[tuple[Any, ...]] = []
    checks = 0

    def check(what: str, response: httpx.Response, expect: Any = None) -> Any:
        nonlocal checks
        checks += 1
        if response.status_code != 200:
            failures.append((what, response.status_code, response.text))
            return None
        found = response.json()["data"]
        if expect is not None and any(found.get(k) != v for k, v in expect.items()):
            failures.append((what, found))
        return found

    for round_, (here, there) in zip(range(ROUNDS), itertools.cycle([replicas, replicas[::-1]])):
        n = here.data(f"keys/{aes}/rotate")["latest_version"]
        # Made on the rotating replica, opened on the other at once, and the other way.
        # (Without key_version a worker uses the latest version it knows, which may be the
        # one before for up to the cache time: every use below names the new one.)
        made_here = here.data(f"encrypt/{aes}", plaintext=message, key_version=n)
        assert made_here["key_version"] == n
        check("decrypt there", there.post(f"decrypt/{aes}", **made_here), {"plaintext": message})
        made_there = check(
            "encrypt there at the new version",
            there.post(f"encrypt/{aes}", plaintext=message, key_version=n),
            {"key_version": n},
        )
        if made_there is not None:
            check("decrypt here", here.post(f"decrypt/{aes}", **made_there), {"plaintext": message})
        rewrapped = check(
            "rewrap there to the new version",
            there.post(f"rewrap/{aes}", ciphertext=made_here["ciphertext"], key_version=n),
        )
        if rewrapped is not None:
            check("decrypt rewrapped", here.post(f"decrypt/{aes}", **rewrapped))

        m = here.data(f"keys/{ec}/rotate")["latest_version"]
        signed = here.data(f"sign/{ec}", input=message, key_version=m)
        assert signed["key_version"] == m
        check("verify there", there.post(f"verify/{ec}", input=message, **signed), {"valid": True})
        signed_there = check(
            "sign there at the new version",
            there.post(f"sign/{ec}", input=message, key_version=m),
            {"key_version": m},
        )
        if signed_there is not None:
            check(
                "verify here",
                here.post(f"verify/{ec}", input=message, signature=signed_there["signature"]),
                {"valid": True},
            )
        assert round_ + 1 == n - 1  # one rotation per round, no lost or double rotation
    assert failures == []
    assert checks >= 7 * ROUNDS


def test_a_raised_min_decryption_version_holds_everywhere_within_the_cache_time(
    replicas: tuple[Replica, Replica],
) -> None:
    first, second = replicas
    name = f"conformance-min-{uuid.uuid4().hex[:8]}"
    first.data(f"keys/{name}")
    old = first.data(f"encrypt/{name}", plaintext=b64(b"old"))
    for _ in range(8):  # every worker of both replicas has the key cached
        second.data(f"decrypt/{name}", **old)
        first.data(f"decrypt/{name}", **old)
    first.data(f"keys/{name}/rotate")
    first.data(f"keys/{name}/config", min_decryption_version=2)
    raised = time.monotonic()
    time.sleep(CACHE_TTL)
    for replica in (second, first) * 8:
        r = replica.post(f"decrypt/{name}", **old)
        assert r.status_code == 400, (time.monotonic() - raised, r.text)
        assert "below min_decryption_version" in r.json()["errors"][0]


def test_deleted_keys_leave_no_object_on_the_token(
    replicas: tuple[Replica, Replica], settings: Any
) -> None:
    kinds = [
        ("aes256-gcm96", None),
        ("hmac", None),
        ("ecdsa-p256", None),
        ("ecdsa-p256", "key-agreement"),
        ("ed25519", None),
        ("aes256-gcm96", None),
    ]
    names = [f"conformance-del-{i}-{uuid.uuid4().hex[:8]}" for i in range(len(kinds))]
    chooser = random.Random(12)  # as a load balancer spreads requests: unevenly
    pick = iter(lambda: chooser.choice(replicas), None)
    for name, (kind, purpose) in zip(names, kinds, strict=True):
        body = {"type": kind} | ({"purpose": purpose} if purpose else {})
        next(pick).data(f"keys/{name}", **body)
    for _ in range(3):  # versions made by every worker of both servers
        for name in names:
            next(pick).data(f"keys/{name}/rotate")
    for name in names:
        next(pick).data(f"keys/{name}/config", deletion_allowed=True)

    before = token_labels(settings, names)
    # Four versions each: one object per secret key, a private and a public one per pair,
    # and for the Transit purposes one more: the version's own HMAC key.
    assert before == {
        name: 4
        * (
            (2 if kind in ("ecdsa-p256", "ed25519") else 1)
            + (1 if kind != "hmac" and purpose is None else 0)
        )
        for name, (kind, purpose) in zip(names, kinds, strict=True)
    }
    for name in names:
        replica = next(pick)
        r = replica.client.delete(f"/v1/transit/keys/{name}")
        assert r.status_code == 204, r.text
    assert token_labels(settings, names) == dict.fromkeys(names, 0)
    time.sleep(CACHE_TTL)  # every worker has forgotten the keys by now
    for replica in replicas * 2:
        for name in names:
            assert replica.post(f"decrypt/{name}", ciphertext="vault:v1:AAAA").status_code == 404


def test_a_delete_destroys_versions_made_by_a_process_it_did_not_see(
    processes: tuple[Replica, Replica], settings: Any
) -> None:
    """SoftHSM 2.6 stops showing a process the objects another one makes once it writes to
    the token itself. The worst order, on purpose: B makes a version, A then writes (another
    key's version), and A deletes the key: A reads the token afresh first."""
    a, b = processes
    names = [f"conformance-blind-{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
    decoy = f"conformance-blind-decoy-{uuid.uuid4().hex[:8]}"
    a.data(f"keys/{decoy}")
    for name in names:
        a.data(f"keys/{name}")
        b.data(f"keys/{name}/rotate")  # made by B
        a.data(f"keys/{decoy}/rotate")  # A writes: B's object is out of A's view now
        a.data(f"keys/{name}/config", deletion_allowed=True)
        assert a.client.delete(f"/v1/transit/keys/{name}").status_code == 204
    assert token_labels(settings, names) == dict.fromkeys(names, 0)
