"""Prometheus metrics of the request path. With ``PROMETHEUS_MULTIPROC_DIR`` set (``serve``
sets it), every worker writes its samples to that directory and ``/metrics`` sums them, so
successive scrapes agree whichever worker answers."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

if TYPE_CHECKING:
    from api.call import Call

REQUESTS = Counter(
    "vault_requests_total",
    "Requests answered, by operation, key and status",
    ["operation", "key", "status"],
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
CONTENT_TYPE = CONTENT_TYPE_LATEST

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
    operation = call.operation or "-"
    # Only keys the caller was allowed to name become label values (bounded by the policies).
    key = call.key if call.key is not None and call.principal is not None else "-"
    REQUESTS.labels(operation, key, str(call.status)).inc()
    LATENCY.labels(operation).observe(seconds)


def exposition() -> bytes:
    """The metrics of every worker of this server (or of this process alone)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
