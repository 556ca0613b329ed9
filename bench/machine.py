"""What the figures were measured on, and how busy the CPUs were while they were."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PACKAGES = ("litestar", "msgspec", "granian", "uvicorn", "uvloop", "httptools", "python-pkcs11")


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _version_of(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return "not installed"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def describe(bao: Path) -> dict[str, str | int | float]:
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "missing"
    load1, load5, _ = os.getloadavg()
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "memory": _first("/proc/meminfo", "MemTotal"),
        "load_1m_at_start": round(load1, 2),
        "load_5m_at_start": round(load5, 2),
        "python": sys.version.split()[0],
        **packages,
        "wrk": _version_of(["wrk", "--version"]).split(" [")[0],
        "openbao": _version_of([str(bao), "version"]).split(" (")[0],
        "softhsm2": _version_of(["softhsm2-util", "--version"]),
    }


def source_state(root: Path) -> dict[str, str | int]:
    """The commit the servers ran from, and how many tracked files differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "modified_files": len(changed.splitlines()) if changed else 0,
    }


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The aggregate line of /proc/stat, in clock ticks."""

    total: int
    idle: int
    steal: int

    @classmethod
    def now(cls) -> CpuTimes:
        try:
            fields = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()[1:]
        except OSError:
            return cls(0, 0, 0)
        values = [int(v) for v in fields[:8]]
        values += [0] * (8 - len(values))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        return cls(
            user + nice + system + idle + iowait + irq + softirq + steal, idle + iowait, steal
        )


def wait_quiet(threshold: float = 25.0, patience: float = 20.0) -> float | None:
    """Wait up to ``patience`` s for the machine to be idle (CPU busy < ``threshold`` % over
    half a second) before a load test; None when it was, else the last busy % seen."""
    deadline = time.monotonic() + patience
    while True:
        before = CpuTimes.now()
        time.sleep(0.5)
        after = CpuTimes.now()
        total = after.total - before.total
        busy = 100.0 * (total - (after.idle - before.idle)) / total if total > 0 else 0.0
        if busy < threshold:
            return None
        if time.monotonic() >= deadline:
            return busy


def group_ticks(pgid: int) -> int:
    """CPU time (user + system, clock ticks) of the live processes in process group ``pgid``."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks


def children_ticks() -> int:
    """CPU time of this process's reaped children (wrk, once it has exited), in ticks."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * _TICKS)


@dataclass(frozen=True, slots=True)
class CpuShare:
    """Where the machine's CPU went during a run, in % of all CPUs."""

    busy: float
    steal: float
    server: float
    wrk: float

    @property
    def other(self) -> float:
        """Everything else: other users of a shared machine, the kernel's own work."""
        return max(0.0, self.busy - self.server - self.wrk)


class CpuMeter:
    """Samples /proc before and after a run; ``stop()`` gives the shares."""

    def __init__(self, pgid: int | None) -> None:
        self._pgid = pgid
        self._times = CpuTimes.now()
        self._server = group_ticks(pgid) if pgid else 0
        self._wrk = children_ticks()

    def stop(self) -> CpuShare:
        later = CpuTimes.now()
        total = later.total - self._times.total
        if total <= 0:
            return CpuShare(0.0, 0.0, 0.0, 0.0)
        server = (group_ticks(self._pgid) - self._server) if self._pgid else 0
        wrk = children_ticks() - self._wrk
        busy = total - (later.idle - self._times.idle)
        return CpuShare(
            busy=100.0 * busy / total,
            steal=100.0 * (later.steal - self._times.steal) / total,
            server=100.0 * server / total,
            wrk=100.0 * wrk / total,
        )
