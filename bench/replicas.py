"""``--only replicas``: hsm-vault as production runs it, replicas on one PostgreSQL database,
first one replica and then two, under the same load (issue 15: two replicas should give at
least 1.6x one for encrypt and otp-verify on a machine with the cores for both; on fewer
cores the figure that compares is throughput per core the servers used).

wrk drives every replica at once (the connections and the OTP bodies split between them) and
the results are added up. Both runs use the same fresh PostgreSQL database, made and set up by
``hsm-vault bootstrap`` (keys on the same token), and dropped at the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from bench import wrk
from bench.procs import ServerProcess
from bench.servers import BIN, start_vault, vault_env
from bench.wrk import WrkResult

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCENARIOS = ("encrypt", "otp-verify")


def group_name(count: int) -> str:
    return f"vault-pg-x{count}"


class PgDatabase:
    """A fresh PostgreSQL database, migrated and given the declared keys."""

    def __init__(self, admin_url: str = PG_ADMIN) -> None:
        import psycopg  # noqa: PLC0415

        self._admin = admin_url
        self.name = f"hsmvault_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"
        env = {**vault_env(), "VAULT_DATABASE_URL": self.url}
        subprocess.run(
            [str(BIN / "hsm-vault"), "bootstrap"], env=env, check=True, capture_output=True
        )

    def drop(self) -> None:
        import psycopg  # noqa: PLC0415

        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self._admin, autocommit=True, connect_timeout=5) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class _Group:
    """The replicas, seen as one server by the campaign: alive while all are."""

    def __init__(self, name: str, servers: list[ServerProcess]) -> None:
        self.name = name
        self.servers = servers
        self.proc = servers[0].proc

    def alive(self) -> bool:
        return all(s.alive() for s in self.servers)

    def death(self) -> str:
        return "; ".join(f"{s.name}: {s.death()}" for s in self.servers if not s.alive())

    def log_text(self) -> str:
        return "\n".join(s.log_text() for s in self.servers)

    def log_excerpt(self, lines: int = 40) -> str:
        return "\n".join(s.log_excerpt(lines // len(self.servers)) for s in self.servers)


class ReplicaSet:
    """``count`` hsm-vault servers of ``workers`` each, on one database."""

    def __init__(self, log_dir: Path, count: int, workers: int, database_url: str) -> None:
        self.count = count
        self.servers: list[ServerProcess] = []
        try:
            for i in range(count):
                name = f"{group_name(count)}-{i + 1}"
                self.servers.append(
                    start_vault(log_dir, workers, name=name, database_url=database_url)
                )
        except BaseException:
            self.stop()
            raise
        self._group = _Group(group_name(count), self.servers)

    @property
    def url(self) -> str:
        """Where a scenario is prepared: any replica will do, they share the database."""
        return self.servers[0].url

    @property
    def process(self) -> _Group:  # the campaign's view: name, alive(), death(), logs
        return self._group

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def wrk(
        self,
        path: str,
        bodies: Sequence[bytes],
        headers: Mapping[str, str],
        *,
        duration: float,
        warmup: float,
        connections: int,
        threads: int,
        verdicts: bool,
        log_path: Path,
        warmup_bodies: Sequence[bytes] | None = None,
    ) -> WrkResult:
        """wrk against every replica at once, the results added up."""
        n = len(self.servers)
        results: list[WrkResult | BaseException] = [RuntimeError("not run")] * n

        def one(i: int) -> None:
            server = self.servers[i]
            # Disjoint slices where there are enough bodies (OTP tokens): each replica
            # accepts its own tokens' codes, as in the one-replica run.
            share = list(bodies[i::n]) if len(bodies) >= n else list(bodies)
            warm = list(warmup_bodies[i::n]) if warmup_bodies and len(warmup_bodies) >= n else None
            try:
                results[i] = wrk.run(
                    server.url + path,
                    share,
                    headers,
                    duration=duration,
                    warmup=warmup,
                    connections=max(1, connections // n),
                    threads=threads,
                    verdicts=verdicts,
                    log_path=log_path.with_name(f"{log_path.stem}-{i + 1}{log_path.suffix}"),
                    server_pgid=server.proc.pid,
                    warmup_bodies=warm,
                )
            except BaseException as exc:
                results[i] = exc

        runners = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for runner in runners:
            runner.start()
        for runner in runners:
            runner.join()
        done: list[WrkResult] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            done.append(result)
        return combine(done)


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Runs side by side as one: counts and rates add up; latency percentiles are the worst
    of the runs (a conservative bound: percentiles do not add); CPU shares of the servers add
    up, the machine-wide ones (busy, wrk, steal: each meter saw every process) are the
    largest seen."""
    first = results[0]
    if len(results) == 1:
        return first
    total = sum(r.requests for r in results)
    busy = max(r.cpu_busy_pct for r in results)
    server = sum(r.cpu_server_pct for r in results)
    wrk_pct = max(r.cpu_wrk_pct for r in results)
    return replace(
        first,
        requests=total,
        duration_s=max(r.duration_s for r in results),
        rps=sum(r.rps for r in results),
        p50_ms=max(r.p50_ms for r in results),
        p90_ms=max(r.p90_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        mean_ms=sum(r.mean_ms * r.requests for r in results) / max(1, total),
        max_ms=max(r.max_ms for r in results),
        status_errors=sum(r.status_errors for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        accepted=sum(r.accepted for r in results),
        replayed=sum(r.replayed for r in results),
        other=sum(r.other for r in results),
        cpu_busy_pct=busy,
        cpu_server_pct=server,
        cpu_wrk_pct=wrk_pct,
        cpu_other_pct=max(0.0, busy - server - wrk_pct),
        cpu_steal_pct=max(r.cpu_steal_pct for r in results),
    )


def per_core(result: WrkResult, cores: int) -> float | None:
    """Requests per second per core the servers used (their CPU share times the cores)."""
    used = result.cpu_server_pct / 100.0 * cores
    return result.rps / used if used > 0 else None
