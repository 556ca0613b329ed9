"""Drive ``wrk`` with bench/lua/post.lua and read back the figures its ``done()`` prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bench.machine import CpuMeter

SCRIPT = Path(__file__).resolve().parent / "lua" / "post.lua"
_MARKER = "BENCH_JSON "


class WrkMissing(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    status_errors: int  # responses >= 400 (wrk's "Non-2xx or 3xx responses")
    socket_errors: int  # connect, read, write errors and timeouts
    accepted: int  # OTP verdicts, when counted
    replayed: int
    other: int
    # During the measured run, in % of all CPUs: everything busy, the server under test,
    # wrk itself, and the rest (anything else on a shared machine), and hypervisor steal.
    cpu_busy_pct: float = 0.0
    cpu_server_pct: float = 0.0
    cpu_wrk_pct: float = 0.0
    cpu_other_pct: float = 0.0
    cpu_steal_pct: float = 0.0

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors

    @property
    def error_rate(self) -> float:
        return self.errors / max(1, self.requests)

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "errors": self.errors, "error_rate": self.error_rate}


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing(
            "wrk is not installed: `sudo apt-get install wrk` (or run `make setup`, which "
            "installs it on Debian)"
        )
    return found


def parse(output: str) -> WrkResult:
    """The ``BENCH_JSON`` line of post.lua's ``done()``."""
    for line in output.splitlines():
        if line.startswith(_MARKER):
            raw = json.loads(line[len(_MARKER) :])
            break
    else:
        raise ValueError(f"wrk printed no {_MARKER.strip()} line:\n{output[-2000:]}")
    duration = raw["duration_us"] / 1e6
    return WrkResult(
        requests=raw["requests"],
        duration_s=duration,
        rps=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        status_errors=raw["status_errors"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        accepted=raw["accepted"],
        replayed=raw["replayed"],
        other=raw["other"],
    )


def run(
    url: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str],
    *,
    duration: float,
    warmup: float,
    connections: int = 32,
    threads: int = 1,
    verdicts: bool = False,
    log_path: Path | None = None,
    server_pgid: int | None = None,
    warmup_bodies: Sequence[bytes] | None = None,
) -> WrkResult:
    """A warm-up run (discarded), then the measured run, both with the same requests
    unless ``warmup_bodies`` are given for the warm-up.

    Bodies and headers go to files in a private temporary directory, so the token never
    shows on a command line.
    """
    exe = wrk_path()
    with tempfile.TemporaryDirectory(prefix="hsm-vault-bench-") as tmp:
        bodies_file = Path(tmp) / "bodies.jsonl"
        warmup_file = Path(tmp) / "warmup.jsonl"
        headers_file = Path(tmp) / "headers.txt"
        bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
        warmup_file.write_bytes(b"\n".join(warmup_bodies or bodies) + b"\n")
        fd = os.open(headers_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(f"{name}: {value}\n" for name, value in headers.items())
        env = {
            **os.environ,
            "BENCH_BODIES": str(bodies_file),
            "BENCH_HEADERS": str(headers_file),
            "BENCH_VERDICTS": "1" if verdicts else "0",
        }

        def once(seconds: float, bodies_path: Path) -> str:
            argv = [
                exe,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "5s",
                "--latency",
                "-s",
                str(SCRIPT),
                url,
            ]
            done = subprocess.run(
                argv,
                env={**env, "BENCH_BODIES": str(bodies_path)},
                capture_output=True,
                text=True,
                timeout=seconds + 30,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]}")
            return done.stdout

        if warmup > 0:
            once(warmup, warmup_file)
        meter = CpuMeter(server_pgid)
        output = once(duration, bodies_file)
        cpu = meter.stop()
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(output, encoding="utf-8")
    return replace(
        parse(output),
        cpu_busy_pct=cpu.busy,
        cpu_server_pct=cpu.server,
        cpu_wrk_pct=cpu.wrk,
        cpu_other_pct=cpu.other,
        cpu_steal_pct=cpu.steal,
    )
