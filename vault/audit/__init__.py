"""The audit chain: every request and every key lifecycle event, hash-chained, signed by an
HSM key kept for the audit alone, verifiable offline (docs/audit.md)."""

from vault.audit.chain import AuditChain, AuditObserver, AuditSettings, Pruned
from vault.audit.keys import AuditKeys
from vault.audit.records import Record, timestamp
from vault.audit.verify import Finding, Report, verify

__all__ = [
    "AuditChain",
    "AuditKeys",
    "AuditObserver",
    "AuditSettings",
    "Finding",
    "Pruned",
    "Record",
    "Report",
    "timestamp",
    "verify",
]
