"""Approval requests and the officers' signed approvals (vault/approvals.py)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from vault.approvals import Action, Approval, ApprovalRequest
from vault.store import Database
from vault.store.tables import approval_requests, approvals

_RECENT = 200


class ApprovalStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, request: ApprovalRequest, first: Approval) -> None:
        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(
                    insert(approval_requests).values(
                        id=request.id,
                        action=request.action.kind,
                        target=request.action.target,
                        params=request.action.params_json(),
                        requested_by=request.requested_by,
                        created_at=request.created_at,
                        expires_at=request.expires_at,
                    )
                )
                conn.execute(insert(approvals).values(request_id=request.id, **_row(first)))

        self.db.run_sync(write)

    def add_approval(self, request_id: str, approval: Approval) -> bool:
        """``False`` when this officer has approved the request already."""

        def write() -> bool:
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(insert(approvals).values(request_id=request_id, **_row(approval)))
            except IntegrityError:
                return False
            return True

        return self.db.run_sync(write)

    def load(self, request_id: str) -> ApprovalRequest | None:
        def query() -> ApprovalRequest | None:
            with self.db.engine.connect() as conn:
                row = (
                    conn.execute(
                        select(approval_requests).where(approval_requests.c.id == request_id)
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    return None
                signed = conn.execute(
                    select(approvals)
                    .where(approvals.c.request_id == request_id)
                    .order_by(approvals.c.created_at)
                ).mappings()
                return _request(row, [_approval(a) for a in signed])

        return self.db.run_sync(query)

    def recent(self) -> list[ApprovalRequest]:
        def query() -> list[str]:
            with self.db.engine.connect() as conn:
                return [
                    r[0]
                    for r in conn.execute(
                        select(approval_requests.c.id)
                        .order_by(approval_requests.c.created_at.desc())
                        .limit(_RECENT)
                    )
                ]

        found = (self.load(i) for i in self.db.run_sync(query))
        return [r for r in found if r is not None]

    def claim(self, request_id: str, actor: str, now: float) -> bool:
        """Mark the request executed, if nobody has and it has not expired (one winner)."""

        def write() -> bool:
            with self.db.engine.begin() as conn:
                return (
                    conn.execute(
                        update(approval_requests)
                        .where(
                            approval_requests.c.id == request_id,
                            approval_requests.c.executed_at.is_(None),
                            approval_requests.c.expires_at > now,
                        )
                        .values(executed_at=now, executed_by=actor[:160])
                    ).rowcount
                    == 1
                )

        return self.db.run_sync(write)

    def release(self, request_id: str) -> None:
        """Undo a claim whose action failed, so the action can be tried again."""

        def write() -> None:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(approval_requests)
                    .where(approval_requests.c.id == request_id)
                    .values(executed_at=None, executed_by=None)
                )

        self.db.run_sync(write)


def _row(approval: Approval) -> dict[str, Any]:
    return {
        "officer": approval.officer,
        "signature": approval.signature,
        "created_at": approval.created_at,
    }


def _approval(row: Any) -> Approval:
    return Approval(row["officer"], bytes(row["signature"]), row["created_at"])


def _request(row: Any, signed: list[Approval]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row["id"],
        action=Action(row["action"], row["target"], json.loads(row["params"])),
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        executed_at=row["executed_at"],
        executed_by=row["executed_by"],
        approvals=tuple(signed),
    )
