"""The gate's stages (``api.gate.Stage``): what runs around every handler, in this order.

- :class:`Subjects` — whom the request is about: a key that declares structured
  ``associated_data`` names a subject per item (``vault.subjects``); the call carries their
  keyed digests (HMAC in the HSM), never the values.
- :class:`SingleUse` — a grant marked ``single_use`` spends the token's ``jti`` (once across
  replicas); a token used again is 401.
- :class:`QuotaStage` — the policies' quotas, per service or per subject; over one is 429
  with ``Retry-After``. All three run before the handler, so a refused request costs no HSM
  work beyond the subject digests.
- :class:`AuditStage` — one record per request in the audit chain, committed before the
  answer leaves; if it cannot be, the gate answers 503 instead (fail closed).
"""

from __future__ import annotations

import binascii
import time
from collections import Counter
from typing import Any

from api import metrics
from api.call import Call
from vault.audit import Record, timestamp
from vault.auth import NotVerified
from vault.errors import BadRequest, Forbidden, RateLimited, Unauthorized
from vault.quotas import QuotaExceeded
from vault.subjects import SubjectFormat


def items_of(body: Any) -> list[Any]:
    """A body's items: its ``batch_input``, or the body itself."""
    batch = getattr(body, "batch_input", None)
    return list(batch) if batch else [body]


def _associated_data(value: Any) -> bytes:
    if not isinstance(value, str):
        return b""
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        return b""  # the handler refuses it (400) with the one message for bad base64


def _subjects(structure: SubjectFormat, items: list[Any]) -> list[str | None]:
    """The subject each item names; each distinct ``associated_data`` read once (a batch's
    items usually share theirs)."""
    read: dict[str, str | None] = {}
    named: list[str | None] = []
    for item in items:
        value = getattr(item, "associated_data", None)
        if not isinstance(value, str):
            named.append(structure.subject(b""))
            continue
        subject = read.get(value, _UNREAD)
        if subject is _UNREAD:
            subject = read[value] = structure.subject(_associated_data(value))
        named.append(subject)
    return named


_UNREAD: Any = object()


class Subjects:
    async def admit(self, call: Call, body: Any) -> None:
        principal = call.principal
        if principal is None or call.operation is None:
            return
        policies = call.vault.policies
        structure = policies.subject_format(call.key)
        items = items_of(body) if body is not None else []
        named = _subjects(structure, items) if structure else []
        inputs = [structure.digest_input(s) for s in named if s is not None] if structure else []
        rules = policies.quotas_for(principal.service.name, call.operation, call.key)
        if any(r.per == "subject" for r in rules) and (not items or len(inputs) != len(items)):
            # Checked before the token is spent or any quota charged.
            raise BadRequest(
                "associated_data must name the subject in the key's declared form "
                "(a quota counts per subject)"
            )
        if inputs:
            call.subjects = tuple(await call.vault.audit.keys.subject_digests(inputs))

    async def record(self, call: Call) -> None:
        return None


class SingleUse:
    async def admit(self, call: Call, body: Any) -> None:
        principal = call.principal
        if principal is None or call.operation is None:
            return
        if principal.service.single_use(call.operation, call.key):
            await call.vault.spent_tokens.spend(principal)

    async def record(self, call: Call) -> None:
        return None


class QuotaStage:
    async def admit(self, call: Call, body: Any) -> None:
        principal = call.principal
        if principal is None or call.operation is None:
            return
        service = principal.service.name
        rules = call.vault.policies.quotas_for(service, call.operation, call.key)
        if not rules:
            return
        items = len(items_of(body)) if body is not None else 1
        subjects = Counter(call.subjects) if call.subjects else None
        try:
            await call.vault.quotas.charge(rules, service, items, subjects)
        except QuotaExceeded as exc:
            metrics.QUOTA_REFUSALS.labels(exc.rule, service, call.operation, call.key or "-").inc()
            raise

    async def record(self, call: Call) -> None:
        return None


def request_record(call: Call, at: float) -> Record:
    """The audit record of a finished call: identifiers, outcome and digests; never a value
    the caller sent."""
    error = call.error
    principal = call.principal
    # The refusal's reason, for the refusals whose texts are fixed (none echoes input).
    # A credential refused before its signature verified tells the caller one thing and the
    # audit trail which condition failed.
    reason = (
        error.reason
        if isinstance(error, NotVerified)
        else str(error)
        if isinstance(error, Unauthorized | Forbidden | RateLimited)
        else None
    )
    claimed = error.service if isinstance(error, Unauthorized) and principal is None else None
    return Record(
        at=timestamp(at),
        type="request",
        request_id=call.request_id,
        service=principal.service.name if principal is not None else None,
        claimed_service=claimed,
        token_id=principal.token_id if principal is not None else None,
        client=call.client or None,
        operation=call.operation,
        key=call.key,
        key_version=call.key_version,
        status=call.status,
        error=type(error).__name__ if error is not None else None,
        reason=reason,
        subjects=tuple(dict.fromkeys(call.subjects)),
        findings=call.findings,
        evidence=call.evidence,
    )


class AuditStage:
    async def admit(self, call: Call, body: Any) -> None:
        return None

    async def record(self, call: Call) -> None:
        if not call.audited or call.vault is None:
            return
        now = time.time()
        try:
            await call.vault.audit.append(request_record(call, now), now)
        except Exception:
            metrics.count(metrics.AUDIT_RECORDS, "failed")
            raise
        metrics.count(metrics.AUDIT_RECORDS, "written")
