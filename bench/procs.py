"""Server processes for the benchmarks: start on a free loopback port, wait for health, stop.

Every server runs in its own process group (``start_new_session``) so that stopping it also
stops its workers, and a Ctrl-C in the terminal reaches only the orchestrator, which then
stops the servers itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
_SECRET_LINE = re.compile(r"(?im)^(.*(?:root token|unseal key|token)\s*:\s*)\S+")


class ServerError(RuntimeError):
    """A server did not start, or died; the message carries an excerpt of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Drop known secrets and anything a server labels as a token or unseal key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return _SECRET_LINE.sub(r"\1<redacted>", text)


class ServerProcess:
    """One server (and its workers) listening on ``127.0.0.1:port``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str],
        cwd: Path,
        secrets: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.log_path = log_path
        self._secrets = tuple(secrets)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:  # a restarted server keeps its predecessor's log
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def process(self) -> ServerProcess:
        return self

    def log_text(self) -> str:
        """This process's part of the log, secrets redacted."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(self._log_start)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return redact(text, self._secrets)

    def log_excerpt(self, lines: int = 40) -> str:
        text = self.log_text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(empty log)"

    def death(self) -> str:
        """How the process ended, for a report."""
        code = self.proc.returncode
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by signal {-code}"
        if code == 0 and "Shutting down" in self.log_text():
            return (
                "exit 0 after a graceful shutdown: it was sent SIGTERM/SIGINT by another "
                "process (not by this benchmark)"
            )
        return f"exit status {code}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_healthy(
        self, path: str = "/v1/sys/health", timeout: float = 60.0, *, expect_any: bool = False
    ) -> None:
        """Poll ``path`` until it answers 200 (any status with ``expect_any``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_text().count("Unexpected exit from worker") >= 2:
                raise ServerError(
                    f"{self.name}'s workers keep dying at start-up; last lines of "
                    f"{self.log_path}:\n{self.log_excerpt(25)}"
                )
            if not self.alive():
                raise ServerError(
                    f"{self.name} exited with status {self.proc.returncode} before it was "
                    f"healthy; last lines of {self.log_path}:\n{self.log_excerpt(25)}"
                )
            try:
                status = httpx.get(self.url + path, timeout=2.0).status_code
                if status == 200 or expect_any:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServerError(
            f"{self.name} was not healthy after {timeout:.0f} s; last lines of "
            f"{self.log_path}:\n{self.log_excerpt(25)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Workers that outlived their parent are still in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
