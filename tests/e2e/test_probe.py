"""``hsm-vault probe``, the container's HEALTHCHECK: 0 when the server on VAULT_LISTEN answers
200, 1 when nothing answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server, free_port

pytestmark = pytest.mark.e2e


def _probe(listen: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("hsm-vault", path=str(Path(sys.executable).parent))
    assert exe is not None
    env = dict(os.environ, VAULT_LISTEN=listen)
    return subprocess.run(
        [exe, "probe", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_probe_answers_for_a_running_server(server: Server) -> None:
    live = _probe(f"0.0.0.0:{server.port}")  # as the image listens: probed over loopback
    assert live.returncode == 0, live.stdout + live.stderr
    assert "/v1/sys/live: 200" in live.stdout
    ready = _probe(f"127.0.0.1:{server.port}", "--ready")
    assert ready.returncode == 0, ready.stdout + ready.stderr


def test_probe_fails_when_nothing_answers() -> None:
    done = _probe(f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert "no answer" in done.stdout
