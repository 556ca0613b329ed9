"""``/metrics`` of a two-worker server: every scrape, whichever worker answers it, gives the
same sums; gauges count live workers only, even after one is killed."""

from __future__ import annotations

import base64
import os
import signal
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server
from tests.e2e.replicas import OTP_KEY, HotpToken, fresh_client

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    # A new connection per scrape: the kernel spreads them over the workers.
    r = httpx.get(f"{server.url}/metrics", timeout=30, headers={"Connection": "close"})
    assert r.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def workers(samples: Samples) -> dict[int, float]:
    """``vault_workers``: one sample per live worker, labelled with its pid."""
    return {
        int(dict(labels)["pid"]): v
        for (name, labels), v in samples.items()
        if name == "vault_workers"
    }


ENCRYPTS = {"service": "backup-service", "operation": "encrypt", "key": "backup-share"}


@pytest.fixture(scope="module")
def two_workers(settings) -> Server:  # type: ignore[no-untyped-def]
    server = Server(settings, workers=2)
    server.wait_for_workers(2)
    yield server
    server.stop()


def test_successive_scrapes_agree_across_workers(two_workers: Server) -> None:
    before = scrape(two_workers)
    n = 12
    with fresh_client(two_workers, "backup-service") as c:
        for i in range(n):
            plaintext = base64.b64encode(f"share {i}".encode()).decode()
            r = c.post("/v1/transit/encrypt/backup-share", json={"plaintext": plaintext})
            assert r.status_code == 200, r.text
        batch = [{"plaintext": base64.b64encode(b"x").decode()}] * 5
        r = c.post("/v1/transit/encrypt/backup-share", json={"batch_input": batch})
        assert r.status_code == 200, r.text
    requests = value(before, "vault_requests_total", **ENCRYPTS, status="200") + n + 1
    items = value(before, "vault_items_total", **ENCRYPTS) + n + 5
    for _ in range(8):
        now = scrape(two_workers)
        assert value(now, "vault_requests_total", **ENCRYPTS, status="200") == requests
        assert value(now, "vault_items_total", **ENCRYPTS) == items
        assert value(now, "vault_request_duration_seconds_count", operation="encrypt") >= n + 1
        assert workers(now) == dict.fromkeys(two_workers.workers(), 1.0)
        assert value(now, "vault_hsm_session_open") == 2
        assert value(now, "vault_hsm_logins_total") >= 2
        assert value(now, "vault_hsm_calls_total") >= n + 1


def test_otp_outcomes_are_counted(two_workers: Server) -> None:
    before = scrape(two_workers)
    token = HotpToken(two_workers)
    with fresh_client(two_workers, "token-management") as c:
        assert token.verify(c, 0).json()["data"]["valid"] is True
        assert token.verify(c, 0).json()["data"]["reason"] == "replayed"
        right = token.body(1)
        wrong = {**right, "otp": f"{(int(right['otp']) + 1) % 10**6:06d}"}
        r = c.post(f"/v1/otp/verify/{OTP_KEY}", json=wrong)
        assert r.json()["data"]["reason"] == "mismatch"
    after = scrape(two_workers)
    for outcome in ("accepted", "replayed", "mismatch"):
        labels = {"key": OTP_KEY, "outcome": outcome}
        grown = value(after, "vault_otp_verifications_total", **labels) - value(
            before, "vault_otp_verifications_total", **labels
        )
        assert grown == 1, outcome


def test_a_killed_worker_leaves_its_counts_and_drops_its_gauges(two_workers: Server) -> None:
    with fresh_client(two_workers, "backup-service") as c:
        for _ in range(4):
            assert (
                c.post("/v1/transit/encrypt/backup-share", json={"plaintext": ""}).status_code
                == 200
            )
    before = value(scrape(two_workers), "vault_requests_total", **ENCRYPTS, status="200")
    victim = two_workers.workers()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while victim in two_workers.workers() or len(two_workers.workers()) < 2:
        assert time.monotonic() < deadline, "the worker was not respawned"
        time.sleep(0.1)
    live = two_workers.wait_for_workers(2)
    # The new worker counts itself once it serves; the dead one must not count any more.
    deadline = time.monotonic() + 60
    while workers(now := scrape(two_workers)) != dict.fromkeys(live, 1.0):
        assert time.monotonic() < deadline, workers(now)
        time.sleep(0.1)
    assert victim not in workers(scrape(two_workers))
    assert value(now, "vault_hsm_session_open") <= 2
    assert value(now, "vault_requests_total", **ENCRYPTS, status="200") == before
