"""Prometheus metrics of the service (the list, with the alerts built on them, is in
docs/deploy.md; example rules in deploy/alerts.yml).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve`` sets it), every worker writes its samples to
files in that directory and ``/metrics`` adds them up, so successive scrapes agree whichever
worker answers. Counters and histograms add up every process that ever ran (a worker's counts
outlive it, as a counter must); gauges count live workers only: the gauge files of a worker
that is gone, killed ones included, are dropped at the next scrape.

Label values are bounded: services and keys come from the policies (a key is named only for
a caller allowed to name it, and not when it does not exist), statuses from the gate's set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from api.processes import alive
from hsm.errors import HsmError
from vault.errors import StoreUnavailable

if TYPE_CHECKING:
    from api.call import Call

_NONE = "-"

REQUESTS = Counter(
    "vault_requests_total",
    "Requests answered, by calling service, operation, key and status",
    ["service", "operation", "key", "status"],
)
ITEMS = Counter(
    "vault_items_total",
    "Values processed successfully, by calling service, operation and key: one per single "
    "request, one per successful item of a batch (what a retrieval-rate alert counts)",
    ["service", "operation", "key"],
)
LATENCY = Histogram(
    "vault_request_duration_seconds",
    "Time from the first byte of a request to its answer, by operation",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
UNEXPECTED = Counter(
    "vault_unexpected_errors_total", "Requests that failed with an unexpected error (a bug)"
)
DATABASE_ERRORS = Counter(
    "vault_database_errors_total",
    "Requests and readiness probes that failed because the database could not be used",
)
OTP_VERIFICATIONS = Counter(
    "vault_otp_verifications_total",
    "OTP verifications answered, by key and outcome (accepted, mismatch, replayed, locked)",
    ["key", "outcome"],
)
HSM_CALLS = Counter(
    "vault_hsm_calls_total",
    "Jobs run on the HSM: each is one request's HSM work (one or more PKCS#11 calls)",
)
HSM_ERRORS = Counter(
    "vault_hsm_errors_total",
    "HSM jobs the token failed, by the adapter's error (HsmUnavailable: session or device)",
    ["error"],
)
HSM_LOGINS = Counter(
    "vault_hsm_logins_total",
    "HSM sessions opened and logged in; beyond one per worker start, these are re-logins",
)
HSM_SESSIONS_LOST = Counter(
    "vault_hsm_sessions_lost_total",
    "HSM sessions the token or device dropped (closed, logged out, device error)",
)
HSM_SESSION_OPEN = Gauge(
    "vault_hsm_session_open",
    "Live workers whose HSM session is open",
    multiprocess_mode="livesum",
)
WORKERS = Gauge(
    "vault_workers",
    "Live worker processes that have started serving: one sample per worker, by pid",
    multiprocess_mode="liveall",
)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# ``labels()`` costs more than the increment itself: each label set's child is kept.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    entry = (metric, *labels)
    child = _children.get(entry)
    if child is None:
        child = _children[entry] = metric.labels(*labels)
    return child


def count(metric: Any, *labels: str) -> None:
    """Add one to ``metric``'s series for ``labels`` (its child kept: see ``_child``)."""
    _child(metric, *labels).inc()


QUOTA_REFUSALS = Counter(
    "vault_quota_refusals_total",
    "Requests refused by a quota (429), by quota, service, operation and key",
    ["quota", "service", "operation", "key"],
)
AUDIT_RECORDS = Counter(
    "vault_audit_records_total",
    "Request records written to the audit chain, and those that could not be (the request "
    "then failed closed)",
    ["outcome"],
)
AUDIT_COMMIT = Histogram(
    "vault_audit_commit_seconds",
    "Time to commit one batch of audit records (group commit), by outcome",
    ["outcome"],
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
AUDIT_BATCH = Histogram(
    "vault_audit_batch_records",
    "Audit records per commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
AUDIT_CHECKPOINTS = Counter(
    "vault_audit_checkpoints_total", "Audit checkpoints signed, by outcome", ["outcome"]
)


class AuditMetrics:
    """The audit chain's observer (``vault.audit.AuditObserver``)."""

    def flushed(self, records: int, seconds: float, ok: bool) -> None:
        AUDIT_COMMIT.labels("ok" if ok else "failed").observe(seconds)
        AUDIT_BATCH.observe(records)

    def checkpointed(self, ok: bool) -> None:
        AUDIT_CHECKPOINTS.labels("ok" if ok else "failed").inc()


AUDIT = AuditMetrics()


def observe(call: Call, seconds: float) -> None:
    operation = call.operation or _NONE
    service = call.service or _NONE
    status = call.status
    named = call.key is not None and call.principal is not None and status not in (403, 404)
    key = call.key if named and call.key is not None else _NONE
    _child(REQUESTS, service, operation, key, str(status)).inc()
    _child(LATENCY, operation).observe(seconds)
    if call.operation is not None and call.principal is not None:
        done = call.items if call.items is not None else int(200 <= status < 300)
        if done:
            _child(ITEMS, service, operation, key).inc(done)
    if isinstance(call.error, StoreUnavailable):
        DATABASE_ERRORS.inc()


def otp_verified(key: str, outcome: str) -> None:
    _child(OTP_VERIFICATIONS, key, outcome).inc()


class HsmMetrics:
    """The HSM adapter's reports (``hsm.HsmObserver``) as metrics."""

    def job_done(self, error: HsmError | None) -> None:
        HSM_CALLS.inc()
        if error is not None:
            _child(HSM_ERRORS, type(error).__name__).inc()

    def session_opened(self) -> None:
        HSM_LOGINS.inc()
        HSM_SESSION_OPEN.set(1)

    def session_closed(self, *, lost: bool) -> None:
        if lost:
            HSM_SESSIONS_LOST.inc()
        HSM_SESSION_OPEN.set(0)


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def worker_started() -> None:
    WORKERS.set(1)


def worker_stopped() -> None:
    """A worker's graceful exit: its gauges stop counting at once."""
    WORKERS.set(0)
    HSM_SESSION_OPEN.set(0)
    if _multiprocess_dir():
        _multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of processes that are gone without a graceful exit (SIGKILL,
    a crash): nothing ran ``worker_stopped`` for them."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        found = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if found is not None and not alive(int(found.group(1))):
            _multiprocess.mark_process_dead(int(found.group(1)), directory)  # type: ignore[no-untyped-call]


def exposition() -> bytes:
    """The metrics of every worker of this server (or of this process alone)."""
    directory = _multiprocess_dir()
    if directory:
        _forget_dead_workers(directory)
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
