"""``make bench``: raw PKCS#11, a bare Litestar endpoint, hsm-vault and OpenBao Transit,
one after the other on this machine, under the same wrk load; a table on stdout and
bench/results/latest.json.

    python -m bench.run [--duration 8] [--warmup 2] [--only pkcs11,bare,vault,replicas,openbao]

Exit status: 0 when every scenario ran (missed targets are shown, not fatal), 1 when a
scenario failed (more than 1% errors) or a server would not start or died, 2 without wrk,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from bench import pkcs11_ceiling, plans, replicas, report, scenarios, wrk
from bench.machine import describe, source_state, wait_quiet
from bench.plans import Plan, S, Step
from bench.procs import ServerError
from bench.replicas import ReplicaSet
from bench.report import Outcome
from bench.scenarios import Payloads, ProbeFailed, Unavailable
from bench.servers import (
    BARE_SERVERS,
    BIN,
    ROOT,
    OpenBao,
    start_bare,
    start_vault,
    vault_env,
    vault_http_server,
)
from vault.errors import VaultError

_St = TypeVar("_St", bound=Step[Any])
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
QUIET_BUDGET = 60.0  # at most this long, in all, waiting for other load to go away
MAX_RESTARTS = 2  # per server: a server that dies is restarted and the scenario retried once
_LOG_PROBLEMS = ("Traceback", "ERROR", "CRITICAL", "WARNING", "Segmentation", "core dumped")


@dataclass(frozen=True, slots=True)
class Options:
    duration: float
    warmup: float
    connections: int
    threads: int
    otp_tokens: int
    otp_import_seconds: float
    ceiling_seconds: float
    parts: tuple[str, ...]
    fresh_var: bool
    vault_workers: int
    replica_workers: int
    scenarios: tuple[str, ...] = ()  # empty: every scenario

    def wanted(self, steps: list[_St]) -> list[_St]:
        return [s for s in steps if not self.scenarios or s.name in self.scenarios]


@dataclass(slots=True)
class Run:
    options: Options
    outcomes: list[Outcome] = field(default_factory=list)
    server_notes: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # servers that failed to start or died
    quiet_budget: float = QUIET_BUDGET  # seconds left to wait for a quiet machine, in all


def _parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--otp-tokens",
        type=int,
        default=2000,
        help="HOTP tokens to import (and a tenth more for the warm-up)",
    )
    parser.add_argument("--otp-import-seconds", type=float, default=30.0)
    parser.add_argument("--ceiling-seconds", type=float, default=1.5, help="per PKCS#11 op")
    parser.add_argument(
        "--only",
        default="pkcs11,bare,vault,replicas,openbao",
        help="comma-separated parts to run",
    )
    parser.add_argument(
        "--fresh-var",
        action="store_true",
        help="bootstrap a throwaway var dir (token, database, keys) instead of using var/",
    )
    parser.add_argument("--vault-workers", type=int, default=2, help="hsm-vault serve --workers")
    parser.add_argument(
        "--replica-workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="workers of each replica in the replicas part (default: half the cores)",
    )
    parser.add_argument(
        "--scenarios",
        default="",
        help="comma-separated scenarios to run (encrypt, decrypt, batch-encrypt, batch-decrypt, "
        "hmac, sign, verify, otp-verify); all by default",
    )
    a = parser.parse_args(argv)
    return Options(
        duration=a.duration,
        warmup=a.warmup,
        connections=a.connections,
        threads=a.threads,
        otp_tokens=a.otp_tokens,
        otp_import_seconds=a.otp_import_seconds,
        ceiling_seconds=a.ceiling_seconds,
        parts=tuple(s.strip() for s in a.only.split(",") if s.strip()),
        fresh_var=a.fresh_var,
        vault_workers=a.vault_workers,
        replica_workers=a.replica_workers,
        scenarios=tuple(s.strip() for s in a.scenarios.split(",") if s.strip()),
    )


def _terminate(signum: int, _: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl-C: unwind, so every ``finally`` stops its server."""
    raise KeyboardInterrupt(f"signal {signum}")


def _say(text: str) -> None:
    print(text, flush=True)


# -- one load test --------------------------------------------------------------------------


def _measure(run: Run, live: S, step: Step[S]) -> Outcome:
    opts = run.options
    server = live.process
    outcome = Outcome(step.name, server.name, "ok")
    try:
        scenario = step.prepare(live)
    except Unavailable as exc:
        outcome.status = "skipped"
        outcome.notes.append(str(exc))
        _say(f"  {server.name} {step.name}: skipped ({exc})")
        return outcome
    except (ProbeFailed, httpx.HTTPError, KeyError, ValueError) as exc:
        outcome.status = "failed"
        outcome.notes.append(f"preparation failed: {type(exc).__name__}: {exc}")
        _say(f"  {server.name} {step.name}: FAILED to prepare ({exc})")
        return outcome
    outcome.items_per_request = scenario.items_per_request
    outcome.ceiling = scenario.ceiling
    outcome.notes.extend([scenario.note] if scenario.note else [])
    waited = time.monotonic()
    busy = wait_quiet(patience=min(10.0, run.quiet_budget))
    run.quiet_budget = max(0.0, run.quiet_budget - (time.monotonic() - waited))
    if busy is not None:
        outcome.notes.append(f"machine busy before the run: {busy:.0f}% CPU used by others")
    _say(f"  {server.name} {step.name}: {opts.warmup:g} s warm-up + {opts.duration:g} s ...")
    load = {
        "duration": opts.duration,
        "warmup": opts.warmup,
        "connections": opts.connections,
        "threads": opts.threads,
        "verdicts": scenario.verdicts,
        "log_path": LOGS / f"wrk-{server.name}-{step.name}.txt",
    }
    try:
        if isinstance(live, ReplicaSet):  # every replica at once, added up
            r = live.wrk(
                scenario.path,
                scenario.bodies,
                scenario.headers,
                warmup_bodies=scenario.warmup_bodies,
                **load,
            )
        else:
            r = wrk.run(
                live.url + scenario.path,
                scenario.bodies,
                scenario.headers,
                warmup_bodies=scenario.warmup_bodies,
                server_pgid=server.proc.pid,
                **load,
            )
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        outcome.status = "failed"
        outcome.notes.append(f"wrk failed: {exc}")
        _say(f"    wrk FAILED: {exc}")
        return outcome
    outcome.result = r
    if scenario.verdicts:
        outcome.notes.append(
            f"verdicts in the measured run: {r.accepted:,} accepted "
            f"({r.accepted / r.duration_s:,.0f} valid checks/s), {r.replayed:,} replayed, "
            f"{r.other:,} other"
        )
    report.judge(outcome)
    _say(
        f"    {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
        f"{r.errors:,} errors; CPU: server {r.cpu_server_pct:.0f}%, wrk {r.cpu_wrk_pct:.0f}%, "
        f"other {r.cpu_other_pct:.0f}% -> {outcome.status}"
    )
    return outcome


def _log_problems(live: S) -> str | None:
    server = live.process
    bad = [
        line
        for line in server.log_text().splitlines()
        if any(p in line for p in _LOG_PROBLEMS) and "dev mode is enabled" not in line
    ]
    if not bad:
        return None
    return f"{server.name} log: {len(bad)} warning/error lines, e.g. {bad[0][:200]!r}"


def _not_run(run: Run, plan: Plan[S], steps: list[Step[S]], why: str) -> None:
    for step in steps:
        outcome = Outcome(step.name, plan.server, "failed")
        outcome.notes.append(f"not run: {why}")
        run.outcomes.append(outcome)


def _campaign(run: Run, plan: Plan[S]) -> None:
    """Start the server, run every step, stop it. A server that dies is restarted (at most
    ``MAX_RESTARTS`` times) and the step retried once; the failed attempt stays on record."""
    _say(f"\n== {plan.label}")
    restarts = 0
    live: S | None = None
    try:
        for index, step in enumerate(plan.steps):
            for attempt in (1, 2):
                if live is None:
                    try:
                        live = plan.start()
                    except ServerError as exc:
                        run.broken.append(plan.label)
                        first = str(exc).splitlines()[0].split("; last lines")[0]
                        run.server_notes.append(
                            f"{plan.label} did not start: {first} (log in {LOGS})"
                        )
                        _say(f"  {plan.label} did not start:\n{exc}")
                        _not_run(run, plan, plan.steps[index:], "the server did not start")
                        return
                outcome = _measure(run, live, step)
                run.outcomes.append(outcome)
                server = live.process
                if server.alive():
                    break
                death, excerpt = server.death(), server.log_excerpt(15)
                outcome.status = "failed"
                outcome.notes.append(f"server died during the run ({death}); log tail:\n{excerpt}")
                run.broken.append(plan.label)
                run.server_notes.append(f"{server.name} died during {step.name}: {death}")
                _say(f"  {server.name} DIED during {step.name}: {death}\n{excerpt}")
                live.stop()
                live = None
                if restarts >= MAX_RESTARTS:
                    _not_run(run, plan, plan.steps[index + 1 :], "the server kept dying")
                    return
                restarts += 1
                if attempt == 1:
                    _say(f"  restarting {server.name}; retrying {step.name} once")
    finally:
        if live is not None:
            live.stop()
            problems = _log_problems(live)
            if problems:
                run.server_notes.append(problems)


def _replicas(run: Run, payloads: Payloads, tokens: plans.VaultTokens) -> None:
    """One replica, then two, on a fresh PostgreSQL database (bench/replicas.py)."""
    opts = run.options
    steps = [
        s
        for s in plans.vault(
            payloads, tokens, opts.otp_tokens, opts.otp_import_seconds, opts.duration, opts.warmup
        )
        if s.name in replicas.SCENARIOS and (not opts.scenarios or s.name in opts.scenarios)
    ]
    try:
        db = replicas.PgDatabase()
    except Exception as exc:  # no PostgreSQL here, or the set-up failed
        why = f"no PostgreSQL database for the replicas: {type(exc).__name__}: {exc}"
        _say(f"\n== replicas: skipped ({why})")
        for count in (1, 2):
            for step in steps:
                outcome = Outcome(step.name, replicas.group_name(count), "skipped")
                outcome.notes.append(why)
                run.outcomes.append(outcome)
        return
    try:
        for count in (1, 2):
            label = (
                f"hsm-vault: {count} replica(s) of {opts.replica_workers} worker(s), "
                "one PostgreSQL database"
            )
            start = functools.partial(
                replicas.ReplicaSet, LOGS, count, opts.replica_workers, db.url
            )
            _campaign(run, Plan(label, replicas.group_name(count), start, steps))
    finally:
        db.drop()
    cores = os.cpu_count() or 1
    for o in run.outcomes:
        if o.server.startswith("vault-pg-") and o.result is not None:
            figure = replicas.per_core(o.result, cores)
            if figure is not None:
                o.notes.append(f"{figure:,.0f} req/s per core the servers used")


# -- main ---------------------------------------------------------------------------------


def _fresh_var(path: Path) -> None:
    """A var dir of our own: new SoftHSM2 token, database at the latest schema, keys."""
    from vault.bootstrap import bootstrap  # noqa: PLC0415
    from vault.config import load_settings  # noqa: PLC0415

    os.environ.update(
        {
            "VAULT_VAR_DIR": str(path),
            "SOFTHSM2_CONF": str(path / "softhsm2.conf"),
            "VAULT_DATABASE_URL": f"sqlite:///{path / 'vault.db'}",
        }
    )
    for name in ("VAULT_PIN", "VAULT_SO_PIN"):
        os.environ.pop(name, None)
    bootstrap(load_settings())


def _settings_line(opts: Options) -> str:
    return (
        f"wrk -t{opts.threads} -c{opts.connections}, {opts.warmup:g} s warm-up + "
        f"{opts.duration:g} s measured per scenario, 1 KB random plaintexts, loopback"
    )


def main(argv: list[str] | None = None) -> int:
    opts = _parse(argv)
    try:
        wrk.wrk_path()
    except wrk.WrkMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    scratch = Path(tempfile.mkdtemp(prefix="hsm-vault-bench-"))
    try:
        return _main(opts, scratch)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, no results written", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _main(opts: Options, scratch: Path) -> int:
    shutil.rmtree(LOGS, ignore_errors=True)
    if opts.fresh_var:
        _fresh_var(scratch / "var")
    os.environ.update(vault_env())
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    machine = describe(BIN / "bao")
    vault_server = vault_http_server()
    source = source_state(ROOT)
    _say(
        f"hsm-vault benchmarks, {started:%Y-%m-%d %H:%M} UTC\n"
        f"machine: {machine['nproc']} x {machine['cpu_model']}, kernel {machine['kernel']}, "
        f"load {machine['load_1m_at_start']} at start\n{_settings_line(opts)}\n"
        f"source: commit {source['commit']}, {source['modified_files']} tracked files modified\n"
        f"hsm-vault serves with {vault_server}: the bare endpoint runs on granian and uvicorn, "
        f"bare-{vault_server} is the reference"
    )
    run = Run(opts)
    payloads = Payloads()
    settings = scenarios.load_settings_for_bench()
    backup = scenarios.token_header(settings, "backup-service")
    ceilings: list[pkcs11_ceiling.Ceiling] = []
    if "pkcs11" in opts.parts:
        _say(f"\n== raw PKCS#11 (in-process, one thread, {opts.ceiling_seconds:g} s per op)")
        try:
            ceilings = pkcs11_ceiling.measure(opts.ceiling_seconds)
            _say(report.ceiling_table(ceilings))
        except VaultError as exc:
            run.broken.append("pkcs11")
            run.server_notes.append(f"raw PKCS#11 not measured: {type(exc).__name__}: {exc}")
            _say(f"  FAILED: {type(exc).__name__}: {exc}")
    if "bare" in opts.parts:
        # The one served like the vault first: it is the reference for ×bare.
        for name in sorted(BARE_SERVERS, key=lambda n: n != vault_server):
            _campaign(
                run,
                Plan(
                    f"bare Litestar endpoint on {name}",
                    f"bare-{name}",
                    functools.partial(start_bare, LOGS, name),
                    opts.wanted(plans.bare(payloads, backup)),
                ),
            )
    tokens = plans.VaultTokens(
        backup=backup,
        payout=scenarios.token_header(settings, "payout-gateway"),
        otp=scenarios.token_header(settings, "token-management"),
    )
    if "vault" in opts.parts:
        steps = opts.wanted(
            plans.vault(
                payloads,
                tokens,
                opts.otp_tokens,
                opts.otp_import_seconds,
                opts.duration,
                opts.warmup,
            )
        )
        start = functools.partial(start_vault, LOGS, opts.vault_workers)
        label = f"hsm-vault ({opts.vault_workers} workers)"
        _campaign(run, Plan(label, report.VAULT, start, steps))
    if "replicas" in opts.parts:
        _replicas(run, payloads, tokens)
    if "openbao" in opts.parts:
        home = scratch / "bao-home"
        steps_bao = opts.wanted(plans.openbao(payloads, run.server_notes))
        start_bao = functools.partial(OpenBao, LOGS, home)
        _campaign(run, Plan("OpenBao 2.7 Transit", report.OPENBAO, start_bao, steps_bao))

    report.add_ratios(run.outcomes, ceilings, f"bare-{vault_server}")
    checks = report.targets(run.outcomes)
    checks += report.replica_targets(run.outcomes, os.cpu_count() or 1, opts.replica_workers)
    elapsed = time.monotonic() - clock
    _say(f"\n== results ({_settings_line(opts)}; {elapsed:.0f} s in all)")
    _say("raw PKCS#11 ceiling (ops/s, one thread):")
    _say(report.ceiling_table(ceilings) if ceilings else "  (not measured)")
    _say(
        f"\nHTTP (xbare: req/s vs bare-{vault_server}; xBao: items/s vs OpenBao; xP11: items/s "
        "vs the one-thread PKCS#11 ceiling of the op behind one item; cpu: server/wrk/other "
        "in % of the machine):"
    )
    _say(report.http_table(run.outcomes))
    if run.server_notes:
        _say("\nservers:\n" + "\n".join(f"  {n}" for n in run.server_notes))
    _say("\ntargets:\n" + "\n".join(t.line() for t in checks))
    document = {
        "started_at": started.isoformat(),
        "elapsed_s": round(elapsed, 1),
        "machine": machine,
        "source": source,
        "vault_http_server": vault_server,
        "bare_reference": f"bare-{vault_server}",
        "var_dir": "fresh (throwaway)" if opts.fresh_var else os.environ["VAULT_VAR_DIR"],
        "settings": {
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "connections": opts.connections,
            "wrk_threads": opts.threads,
            "vault_workers": opts.vault_workers,
            "replica_workers": opts.replica_workers,
            "plaintext_bytes": scenarios.PLAINTEXT_BYTES,
            "batch_items": scenarios.BATCH_ITEMS,
            "otp_tokens": opts.otp_tokens,
        },
        "pkcs11": [c.as_dict() for c in ceilings],
        "scenarios": [o.as_dict() for o in run.outcomes],
        "servers": run.server_notes,
        "targets": [t.as_dict() for t in checks],
    }
    out = RESULTS / "latest.json"
    report.write_json(out, document)
    _say(f"\nwritten: {out.relative_to(ROOT)} (server and wrk logs in {LOGS.relative_to(ROOT)}/)")
    failed = run.broken or any(o.status == "failed" for o in run.outcomes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
