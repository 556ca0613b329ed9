"""SIGKILL under load: a worker of one replica, then the whole other replica, while OTPs are
verified, data encrypted and a key rotated on both. Nothing that was answered as done is lost:
every accepted OTP position stays used, every ciphertext handed out decrypts, every key
version announced exists — seen by the surviving replica and by a new one started afterwards.

(No audit trail exists yet to check here; its own tests belong with it.)
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Server
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

PHASE = 1.5  # seconds of load between kills
TIMEOUT = 20.0  # per request: nothing here may hang the test


class Load:
    """Clients of every replica still up, and what they were told was done."""

    def __init__(self, servers: list[Server], key: str, tokens: list[HotpToken]) -> None:
        self.servers = servers
        self.up = set(range(len(servers)))
        self.key = key
        self.tokens = tokens
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted: set[tuple[int, int]] = set()  # (token index, counter)
        self.sealed: dict[str, str] = {}  # ciphertext -> plaintext
        self.versions: set[int] = {1}
        self.answered = 0
        self.errors: list[str] = []

    def _loop(self, service: str, step: Callable[[httpx.Client], None]) -> None:
        clients: dict[int, httpx.Client] = {}
        try:
            while not self.stop.is_set():
                index = random.choice(sorted(self.up))
                if index not in clients:
                    clients[index] = fresh_client(self.servers[index], service)
                try:
                    step(clients[index])
                except httpx.TransportError:
                    pass  # the worker or replica was killed mid-request: outcome unknown
                except Exception as exc:  # an assertion in a step: report, keep going
                    with self.lock:
                        self.errors.append(repr(exc))
        finally:
            for client in clients.values():
                client.close()

    def otp(self, t: int) -> None:
        token, counter = self.tokens[t], 0

        def step(client: httpx.Client) -> None:
            nonlocal counter
            r = token.verify(client, counter)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 503:
                return
            data = r.json()["data"]
            # "replayed": an earlier attempt of this very code was accepted, its answer lost.
            assert data["valid"] or data["reason"] == "replayed", data
            with self.lock:
                self.accepted.add((t, counter))
                self.answered += 1
            counter += 1

        self._loop("token-management", step)

    def encrypt(self) -> None:
        def step(client: httpx.Client) -> None:
            plaintext = b64(uuid.uuid4().bytes)
            r = client.post(f"/v1/transit/encrypt/{self.key}", json={"plaintext": plaintext})
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:
                with self.lock:
                    self.sealed[r.json()["data"]["ciphertext"]] = plaintext
                    self.answered += 1

        self._loop("transit-conformance", step)

    def rotate(self) -> None:
        def step(client: httpx.Client) -> None:
            r = client.post(f"/v1/transit/keys/{self.key}/rotate")
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:
                with self.lock:
                    self.versions.add(r.json()["data"]["latest_version"])
            time.sleep(0.3)

        self._loop("security-officer", step)

    def run(self) -> list[threading.Thread]:
        targets: list[tuple[Callable[..., None], tuple[Any, ...]]] = [
            (self.otp, (t,)) for t in range(len(self.tokens))
        ]
        targets += [(self.encrypt, ()), (self.encrypt, ()), (self.rotate, ())]
        threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in targets]
        for thread in threads:
            thread.start()
        return threads

    def until_more_answers(self, count: int) -> None:
        """Let the load run ``PHASE`` seconds and at least ``count`` more answers."""
        with self.lock:
            goal = self.answered + count
        time.sleep(PHASE)
        deadline = time.monotonic() + 120
        while self.answered < goal:
            assert time.monotonic() < deadline, "the load made no progress"
            time.sleep(0.05)


def _in_parallel(
    server: Server, service: str, items: list[Any], check: Callable[..., None]
) -> None:
    """``check(client, item)`` for every item, on a few threads with a client each."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def one(item: Any) -> None:
        if not hasattr(local, "client"):
            local.client = fresh_client(server, service)
            clients.append(local.client)
        check(local.client, item)

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(one, items))
    finally:
        for client in clients:
            client.close()


def check_nothing_lost(server: Server, load: Load) -> None:
    def kept(c: httpx.Client, token: int) -> None:
        """The ledger is at (or past) every position accepted before the kill, and a code
        accepted then is refused as a replay now."""
        counters = [counter for t, counter in load.accepted if t == token]
        if not counters:
            return
        assert load.tokens[token].state(c)["counter"] >= max(counters), token
        r = load.tokens[token].verify(c, max(counters))
        assert r.status_code == 200, r.text
        assert r.json()["data"] == {"valid": False, "reason": "replayed"}, token

    def decrypts(c: httpx.Client, sealed: tuple[str, str]) -> None:
        ciphertext, plaintext = sealed
        r = c.post(f"/v1/transit/decrypt/{load.key}", json={"ciphertext": ciphertext})
        assert r.status_code == 200, r.text
        assert r.json()["data"]["plaintext"] == plaintext

    _in_parallel(server, "token-management", sorted({t for t, _ in load.accepted}), kept)
    _in_parallel(server, "transit-conformance", list(load.sealed.items()), decrypts)
    with server.client("security-officer") as officer:
        r = officer.get(f"/v1/transit/keys/{load.key}")
        assert r.status_code == 200, r.text
        known = {int(v) for v in r.json()["data"]["keys"]}
        assert load.versions <= known


def test_sigkill_of_a_worker_and_of_a_replica_loses_nothing(settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    with replicas(settings, database_url) as (a, b):
        create_key(a, OTP_KEY, "otp-seed")
        key = conformance_key(a)
        load = Load([a, b], key, [HotpToken(a) for _ in range(3)])
        a_workers = a.wait_for_workers(2)
        b.wait_for_workers(2)
        threads = load.run()
        try:
            load.until_more_answers(20)
            os.kill(a_workers[0], signal.SIGKILL)
            load.until_more_answers(20)
            load.up.discard(1)
            b.kill()
            load.until_more_answers(20)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not load.errors, load.errors[:5]
        assert load.accepted
        assert load.sealed
        assert len(load.versions) > 1
        # The survivor replaced its worker by itself and lost nothing.
        assert a.proc.poll() is None
        assert a_workers[0] not in a.wait_for_workers(2)
        check_nothing_lost(a, load)
        # Nor did the database: a replica started afresh sees the same.
        with replicas(settings, database_url, count=1) as (c,):
            check_nothing_lost(c, load)
