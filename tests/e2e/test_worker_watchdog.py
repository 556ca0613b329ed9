"""A stopped worker (SIGSTOP: its socket still takes its share of new connections) is killed
by its sibling's watchdog and replaced, so new connections stop stalling without a restart of
the server."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import httpx
import pytest

from tests.conftest import Server

pytestmark = pytest.mark.e2e

STALL = 3  # seconds (the default is 30)


def test_a_stopped_worker_is_replaced(settings) -> None:  # type: ignore[no-untyped-def]
    server = Server(settings, workers=2, env={"VAULT_WORKER_STALL_TIMEOUT": str(STALL)})
    try:
        victim, survivor = server.wait_for_workers(2)
        time.sleep(1.5)  # both workers beat at least once
        os.kill(victim, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while victim in server.workers() or len(server.workers()) < 2:
                assert time.monotonic() < deadline, "the stopped worker was not replaced"
                time.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGCONT)
        workers = server.wait_for_workers(2)
        assert survivor in workers  # the server and the healthy worker never stopped
        assert server.proc.poll() is None
        # Every new connection is answered again, none waits for the stopped worker.
        for _ in range(20):
            r = httpx.get(f"{server.url}/v1/sys/live", timeout=10, headers={"Connection": "close"})
            assert r.status_code == 200
        assert "has not answered" in server.read_log()
    finally:
        server.stop()
