"""Dual control: actions that need the approvals of two different officers within a time limit.

An officer *requests* an action (and so gives the first approval); another *approves* it;
then the action may be executed once, before the request expires. Each approval is the
officer's signature (``vault.officers``) over :meth:`ApprovalRequest.message`, the canonical
description of the action, its request id and its expiry: an approval cannot be moved to
another action or reused after its one execution, and whoever can write to the database
cannot make one. Signatures are checked again, against the officers declared *now*, every
time an action is executed (an officer removed from ``policies/officers.toml`` stops
counting).

Who calls it: the key registry for deleting, trimming and lowering ``min_decryption_version``
(from the officers' CLI and from the API), and token revocation for revoking all of a
service's tokens::

    with vault.dual_control.authorize(approval_id, Action.revoke_tokens(service), actor) as by:
        ...  # runs only with two valid, distinct, unexpired approvals; ``by`` names them
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vault import officers as credentials
from vault.errors import BadRequest, Forbidden, NotFound
from vault.events import EventSink, LifecycleEvent
from vault.policy import Officer

if TYPE_CHECKING:
    from vault.store.approvals import ApprovalStore

REQUIRED_APPROVALS = 2  # "two different officers" (the four-eyes principle)
DEFAULT_TTL = 3600  # seconds between the request and the last moment it may be executed
_MESSAGE_PREFIX = b"hsm-vault approval v1\n"  # domain separation: nothing else signs this

Param = int | str | bool

KEY_DELETE = "key.delete"
KEY_TRIM = "key.trim"
KEY_LOWER_MIN_DECRYPTION = "key.lower_min_decryption_version"
SERVICE_REVOKE_TOKENS = "service.revoke_tokens"
ACTIONS = frozenset({KEY_DELETE, KEY_TRIM, KEY_LOWER_MIN_DECRYPTION, SERVICE_REVOKE_TOKENS})


@dataclass(frozen=True, slots=True)
class Authority:
    """Who makes a change, and under what approval.

    ``actor``: ``officer:<name>``, ``service:<name>`` or ``vault`` (the vault itself).
    ``approval``: the id of an approval request, for the changes that need two officers.
    ``exempt``: a dev service with ``dual_control = false`` (policies/services.toml).
    """

    actor: str
    approval: str | None = None
    exempt: bool = False


@dataclass(frozen=True, slots=True)
class Action:
    """What is to be done, exactly: an approval covers this and nothing else."""

    kind: str
    target: str  # the key's or the service's name
    params: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ACTIONS:
            raise BadRequest(f"unknown action {self.kind!r}: one of {sorted(ACTIONS)}")

    @classmethod
    def delete_key(cls, key: str) -> Action:
        return cls(KEY_DELETE, key)

    @classmethod
    def trim_key(cls, key: str, min_available_version: int) -> Action:
        return cls(KEY_TRIM, key, {"min_available_version": min_available_version})

    @classmethod
    def lower_min_decryption(cls, key: str, min_decryption_version: int) -> Action:
        return cls(
            KEY_LOWER_MIN_DECRYPTION, key, {"min_decryption_version": min_decryption_version}
        )

    @classmethod
    def revoke_tokens(cls, service: str) -> Action:
        return cls(SERVICE_REVOKE_TOKENS, service)

    def params_json(self) -> str:
        return canonical_json(dict(self.params))

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind} {self.target}" + (f" ({extra})" if extra else "")


@dataclass(frozen=True, slots=True)
class Approval:
    officer: str
    signature: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    id: str
    action: Action
    requested_by: str
    created_at: float
    expires_at: float
    executed_at: float | None = None
    executed_by: str | None = None
    approvals: tuple[Approval, ...] = ()

    def message(self) -> bytes:
        """What every approving officer signs (times in whole seconds: exact in any store)."""
        return (
            _MESSAGE_PREFIX
            + canonical_json(
                {
                    "id": self.id,
                    "action": self.action.kind,
                    "target": self.action.target,
                    "params": dict(self.action.params),
                    "requested_by": self.requested_by,
                    "created_at": int(self.created_at),
                    "expires_at": int(self.expires_at),
                }
            ).encode()
        )

    def valid_approvers(self, officers: Mapping[str, Officer]) -> list[str]:
        """Distinct declared officers whose signature over this request verifies now."""
        message = self.message()
        return sorted(
            {
                a.officer
                for a in self.approvals
                if a.officer in officers
                and officers[a.officer].public_key is not None
                and credentials.verify(officers[a.officer], a.signature, message)
            }
        )


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


Signer = Callable[[bytes], bytes]


class DualControl:
    def __init__(
        self,
        store: ApprovalStore,
        officers: Mapping[str, Officer],
        events: EventSink,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.officers = officers
        self.events = events
        self.ttl = ttl
        self._clock = clock

    def request(self, action: Action, officer: str, sign: Signer) -> ApprovalRequest:
        """A new request for ``action``, approved by the officer who asks for it."""
        self._declared(officer)
        now = float(int(self._clock()))
        pending = ApprovalRequest(
            id=secrets.token_hex(8),
            action=action,
            requested_by=officer,
            created_at=now,
            expires_at=now + self.ttl,
        )
        approval = self._signed(pending, officer, sign, now)
        self.store.insert(pending, approval)
        self.events.emit(
            LifecycleEvent(
                "approval.request",
                f"officer:{officer}",
                key=_key_of(action),
                details={"approval": pending.id, "action": action.describe()},
            )
        )
        return self.get(pending.id)

    def approve(self, request_id: str, officer: str, sign: Signer) -> ApprovalRequest:
        """Add ``officer``'s approval to a pending request (once per officer)."""
        self._declared(officer)
        pending = self.get(request_id)
        now = self._clock()
        self._usable(pending, now)
        if any(a.officer == officer for a in pending.approvals):
            raise BadRequest(f"officer {officer!r} has already approved {request_id}")
        if not self.store.add_approval(request_id, self._signed(pending, officer, sign, now)):
            raise BadRequest(f"officer {officer!r} has already approved {request_id}")
        self.events.emit(
            LifecycleEvent(
                "approval.grant",
                f"officer:{officer}",
                key=_key_of(pending.action),
                details={"approval": request_id, "action": pending.action.describe()},
            )
        )
        return self.get(request_id)

    def get(self, request_id: str) -> ApprovalRequest:
        found = self.store.load(request_id)
        if found is None:
            raise NotFound(f"no approval request {request_id!r}")
        return found

    def pending(self) -> list[ApprovalRequest]:
        now = self._clock()
        return [r for r in self.store.recent() if r.executed_at is None and r.expires_at > now]

    def check(self, request_id: str | None, action: Action) -> tuple[str, ...]:
        """The officers whose approvals allow ``action`` under ``request_id``; ``Forbidden``
        saying what is missing otherwise. Nothing is consumed (see :meth:`authorize`)."""
        if not request_id:
            raise Forbidden(
                f"{action.describe()} needs the approvals of {REQUIRED_APPROVALS} different "
                "officers: request one with `hsm-vault approvals request` and pass its id"
            )
        try:
            pending = self.get(request_id)
        except NotFound:
            raise Forbidden(f"no approval request {request_id!r}") from None
        if pending.action != action:
            raise Forbidden(
                f"approval {request_id} is for {pending.action.describe()}, not {action.describe()}"
            )
        self._usable(pending, self._clock())
        approvers = pending.valid_approvers(self.officers)
        if len(approvers) < REQUIRED_APPROVALS:
            raise Forbidden(
                f"{action.describe()} needs the approvals of {REQUIRED_APPROVALS} different "
                f"officers; approval {request_id} has {len(approvers)}"
            )
        return tuple(approvers)

    @contextmanager
    def authorize(
        self, request_id: str | None, action: Action, actor: str
    ) -> Iterator[tuple[str, ...]]:
        """Run the block as ``action`` approved under ``request_id``, at most once: the
        request is claimed first (one executor wins across replicas) and released again if
        the block fails, so a failed attempt can be retried while the request is valid."""
        approvers = self.check(request_id, action)
        assert request_id is not None
        if not self.store.claim(request_id, actor, self._clock()):
            raise Forbidden(f"approval {request_id} was already used or has expired")
        try:
            yield approvers
        except BaseException:
            self.store.release(request_id)
            raise

    def _declared(self, officer: str) -> Officer:
        found = self.officers.get(officer)
        if found is None or found.public_key is None:
            raise Forbidden(f"{officer!r} is not an officer declared in policies/officers.toml")
        return found

    def _signed(self, pending: ApprovalRequest, officer: str, sign: Signer, now: float) -> Approval:
        signature = sign(pending.message())
        if not credentials.verify(self._declared(officer), signature, pending.message()):
            raise Forbidden(f"the signature does not verify with officer {officer!r}'s key")
        return Approval(officer, signature, now)

    @staticmethod
    def _usable(pending: ApprovalRequest, now: float) -> None:
        if pending.executed_at is not None:
            raise Forbidden(f"approval {pending.id} was already used")
        if now >= pending.expires_at:
            raise Forbidden(f"approval {pending.id} has expired")


def _key_of(action: Action) -> str | None:
    return action.target if action.kind.startswith("key.") else None
