"""The worker watchdog: a worker that stops answering is killed, and the server starts another.

granian gives each worker its own listening socket (``SO_REUSEPORT``): the kernel hands every
new connection to one of them. A worker that is stopped (``SIGSTOP``), or whose event loop is
stuck, keeps its socket, so the connections the kernel gives it — about 1/N of all new ones —
wait until their clients time out (measured: 9 of 20 with two workers, one stopped), and
nothing in granian notices. gunicorn's answer is the arbiter's worker timeout; here every
worker watches its siblings:

- each worker's event loop touches its heartbeat file (``<run dir>/workers/<pid>``) every
  second, so the file ages when the loop stops turning, for whatever reason;
- a thread in each worker looks at its siblings' files (same parent: the server process) and
  sends ``SIGKILL`` to one whose heartbeat is older than ``VAULT_WORKER_STALL_TIMEOUT``
  seconds; granian then starts a new worker (``respawn_failed_workers``).

Requests the stuck worker held are lost (their clients see the connection end and may retry).
A whole server that stops is for the load balancer's health check (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from api.processes import parent_of

log = logging.getLogger("vault.watchdog")

BEAT_INTERVAL = 1.0  # seconds between heartbeats (and between looks at the siblings)


class Watchdog:
    def __init__(self, directory: Path, stall_timeout: float) -> None:
        self.directory = directory
        self.stall_timeout = stall_timeout
        self._own = directory / str(os.getpid())
        self._stop = threading.Event()
        self._beat_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """On the worker's event loop, once it serves."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._own.touch()
        self._beat_task = asyncio.get_running_loop().create_task(self._beat())
        threading.Thread(target=self._watch, name="watchdog", daemon=True).start()

    def stop(self) -> None:
        """A graceful exit: stop watching, and take this worker off the siblings' watch."""
        self._stop.set()
        if self._beat_task is not None:
            self._beat_task.cancel()
        with contextlib.suppress(OSError):
            self._own.unlink()

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                os.utime(self._own)
            await asyncio.sleep(BEAT_INTERVAL)

    def _watch(self) -> None:
        while not self._stop.wait(BEAT_INTERVAL):
            try:
                self.check_siblings()
            except Exception:
                log.exception("the worker watchdog failed to look at its siblings")

    def check_siblings(self) -> list[int]:
        """Kill the siblings whose heartbeat is too old; forget the files of dead ones."""
        killed = []
        me, parent, now = os.getpid(), os.getppid(), time.time()
        for path in self.directory.iterdir():
            if not path.name.isdigit() or int(path.name) == me:
                continue
            pid = int(path.name)
            if parent_of(pid) != parent:  # gone (or not ours any more): a stale file
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue
            if age > self.stall_timeout:
                log.error("worker %d has not answered for %.0f s: killing it", pid, age)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    path.unlink()
                killed.append(pid)
        return killed
