"""Results, ratios, targets: the table on stdout and bench/results/latest.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.pkcs11_ceiling import Ceiling
from bench.wrk import WrkResult

MAX_ERROR_RATE = 0.01
VAULT, OPENBAO = "hsm-vault", "openbao"
# ×bare is only meaningful where the request looks like the bare endpoint's (1 KB JSON POST).
# Single-item requests: the bare endpoint is their framework ceiling (issues 2, 3 and 4).
_BARE_COMPARABLE = ("encrypt", "decrypt", "hmac", "sign", "verify", "otp-verify")


@dataclass(slots=True)
class Outcome:
    """One scenario on one server: measured, skipped (no endpoint) or failed."""

    scenario: str
    server: str
    status: str  # ok | failed | skipped
    result: WrkResult | None = None
    items_per_request: int = 1
    ceiling: str | None = None
    notes: list[str] = field(default_factory=list)
    vs_bare: float | None = None
    vs_openbao: float | None = None
    vs_pkcs11: float | None = None

    @property
    def rps(self) -> float | None:
        return self.result.rps if self.result else None

    @property
    def items_per_s(self) -> float | None:
        return self.result.rps * self.items_per_request if self.result else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "server": self.server,
            "status": self.status,
            "req_per_s": self.rps,
            "items_per_s": self.items_per_s,
            "items_per_request": self.items_per_request,
            "p50_ms": self.result.p50_ms if self.result else None,
            "p99_ms": self.result.p99_ms if self.result else None,
            "errors": self.result.errors if self.result else None,
            "vs_bare": self.vs_bare,
            "vs_openbao": self.vs_openbao,
            "vs_pkcs11": self.vs_pkcs11,
            "pkcs11_op": self.ceiling,
            "notes": self.notes,
            "wrk": self.result.as_dict() if self.result else None,
        }


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    value: float | None
    threshold: float | None
    passed: bool | None  # None: could not be judged (skipped or failed scenario)
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.label,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
        }

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "N/A "}[self.passed]
        shown = "—" if self.value is None else f"{self.value:,.2f}{self.unit}"
        if self.threshold is not None:
            shown += f" (threshold {self.threshold:,.2f}{self.unit})"
        return f"  [{mark}] {self.label}: {shown}"


def judge(outcome: Outcome) -> None:
    """A scenario with more than 1% errors (non-2xx or socket) has failed."""
    r = outcome.result
    if r is None or outcome.status != "ok":
        return
    if r.error_rate > MAX_ERROR_RATE:
        outcome.status = "failed"
        outcome.notes.append(
            f"{r.errors:,} errors in {r.requests:,} requests ({100 * r.error_rate:.1f}%: "
            f"{r.status_errors:,} non-2xx, {r.socket_errors:,} socket)"
        )


def _find(outcomes: list[Outcome], server: str, scenario: str) -> Outcome | None:
    for o in outcomes:
        if o.server == server and o.scenario == scenario and o.status == "ok":
            return o
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(outcomes: list[Outcome], ceilings: list[Ceiling], bare_server: str) -> None:
    """``bare_server``: the bare endpoint served like the vault, the reference for ×bare."""
    by_op = {c.op: c.ops_per_s for c in ceilings}
    bare = _find(outcomes, bare_server, "encrypt")
    for o in outcomes:
        if o.status != "ok":
            continue
        if not o.server.startswith("bare-") and bare is not None and o.scenario in _BARE_COMPARABLE:
            o.vs_bare = _ratio(o.rps, bare.rps)
        if o.server == VAULT:
            bao = _find(outcomes, OPENBAO, o.scenario)
            o.vs_openbao = _ratio(o.items_per_s, bao.items_per_s if bao else None)
        if o.ceiling is not None:
            o.vs_pkcs11 = _ratio(o.items_per_s, by_op.get(o.ceiling))


def _target(
    label: str, value: float | None, threshold: float | None, unit: str, *, below: bool = False
) -> Target:
    if value is None or threshold is None:
        return Target(label, value, threshold, None, unit)
    return Target(label, value, threshold, value < threshold if below else value >= threshold, unit)


def _vs_openbao(outcomes: list[Outcome], scenario: str, threshold: float) -> Target:
    found = _find(outcomes, VAULT, scenario)
    return _target(
        f"{scenario} >= {threshold:.2f} x OpenBao",
        found.vs_openbao if found else None,
        threshold,
        "x",
    )


def _p99(outcomes: list[Outcome], scenario: str, limit: float) -> Target:
    found = _find(outcomes, VAULT, scenario)
    value = found.result.p99_ms if found and found.result else None
    return _target(f"{scenario} p99 < {limit:g} ms", value, limit, " ms", below=True)


def valid_checks_per_s(outcome: Outcome | None) -> float | None:
    """Checks of valid OTP codes the vault accepted, per second of the measured run."""
    r = outcome.result if outcome else None
    return r.accepted / r.duration_s if r and r.duration_s else None


def targets(outcomes: list[Outcome]) -> list[Target]:
    """Issue 16's targets, side by side with OpenBao on the same machine."""
    otp = _find(outcomes, VAULT, "otp-verify")
    return [
        _vs_openbao(outcomes, "encrypt", 1.25),
        _p99(outcomes, "encrypt", 15.0),
        _vs_openbao(outcomes, "batch-encrypt", 1.0),
        _vs_openbao(outcomes, "batch-decrypt", 1.0),
        _vs_openbao(outcomes, "sign", 1.25),
        _vs_openbao(outcomes, "verify", 1.25),
        _vs_openbao(outcomes, "decrypt", 1.0),
        _vs_openbao(outcomes, "hmac", 1.0),
        _target("otp-verify >= 5,000 valid checks/s", valid_checks_per_s(otp), 5_000, "/s"),
        _p99(outcomes, "otp-verify", 25.0),
    ]


def replica_targets(outcomes: list[Outcome], cores: int, workers: int) -> list[Target]:
    """Two replicas against one (issue 15: >= 1.6x for encrypt and otp-verify). Where the
    machine lacks the cores for two replicas (2 x ``workers``, plus one for wrk and the
    database), the servers' throughput per core used is compared instead: two replicas that
    keep >= 0.8 of one replica's per-core throughput would give 1.6x with the cores."""
    enough = cores >= 2 * workers + 1
    checks = []
    for scenario in ("encrypt", "otp-verify"):
        one = _find(outcomes, "vault-pg-x1", scenario)
        two = _find(outcomes, "vault-pg-x2", scenario)
        if enough:
            value = _ratio(two.rps if two else None, one.rps if one else None)
            label = f"2 replicas {scenario} >= 1.6 x 1 replica ({cores} cores)"
            checks.append(_target(label, value, 1.6, "x"))
            continue
        per_one = _per_core(one, cores)
        per_two = _per_core(two, cores)
        label = (
            f"2 replicas {scenario} per core >= 0.8 x 1 replica per core "
            f"({cores} cores: too few for 2 x {workers} workers)"
        )
        checks.append(_target(label, _ratio(per_two, per_one), 0.8, "x"))
    return checks


def _per_core(outcome: Outcome | None, cores: int) -> float | None:
    if outcome is None or outcome.result is None:
        return None
    used = outcome.result.cpu_server_pct / 100.0 * cores
    return outcome.result.rps / used if used > 0 else None


# -- text ---------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "—" if value is None else format(value, fmt)


def _ratio_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _cpu(r: WrkResult | None) -> str:
    """Server / wrk / everything else, in % of the whole machine."""
    if r is None:
        return "—"
    return f"{r.cpu_server_pct:.0f}/{r.cpu_wrk_pct:.0f}/{r.cpu_other_pct:.0f}"


def ceiling_table(ceilings: list[Ceiling]) -> str:
    rows = [f"  {'op':<9} {'ops/s':>9} {'µs/op':>7}  what"]
    rows += [
        f"  {c.op:<9} {c.ops_per_s:>9,.0f} {c.us_per_op:>7.1f}  {c.description}" for c in ceilings
    ]
    return "\n".join(rows)


def http_table(outcomes: list[Outcome]) -> str:
    header = (
        f"  {'server':<14}{'scenario':<15}{'req/s':>9}{'items/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'errors':>8}{'xbare':>7}{'xBao':>7}{'xP11':>7}  {'cpu s/w/o %':<12} status"
    )
    rows = [header]
    for o in outcomes:
        r = o.result
        items = o.items_per_s if o.items_per_request > 1 else None
        rows.append(
            f"  {o.server:<14}{o.scenario:<15}{_num(o.rps):>9}{_num(items):>10}"
            f"{_num(r.p50_ms if r else None, '.2f'):>8}{_num(r.p99_ms if r else None, '.2f'):>8}"
            f"{_num(r.errors if r else None, ',d'):>8}{_ratio_text(o.vs_bare):>7}"
            f"{_ratio_text(o.vs_openbao):>7}{_ratio_text(o.vs_pkcs11):>7}  {_cpu(r):<12} "
            f"{o.status.upper()}"
        )
    notes = [f"  {o.server}/{o.scenario}: {n}" for o in outcomes for n in o.notes]
    if notes:
        rows += ["", "  notes:", *notes]
    return "\n".join(rows)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
