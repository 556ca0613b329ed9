"""One request as the gate sees it: who calls, what operation on which key, and how it ended.

The gate (``api/gate.py``) makes a :class:`Call` for every request before anything else,
fills in the caller once it is authenticated, and hands it to the route's handler; handlers
add what only they know (the key version used). Metrics, the request log and the audit trail
read the finished call.
"""

from __future__ import annotations

import contextvars
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from litestar.di import NamedDependency

if TYPE_CHECKING:
    from vault.auth import Principal
    from vault.runtime import Vault

ROUTE = "route"  # the key of a route handler's ``opt`` that holds its RouteSpec


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """What a route is, for the gate: the operation a grant must name, the path parameter
    that names the key (``None``: the operation is checked against any key, and the
    handler checks the key it really uses), or that it is public (no token)."""

    operation: str | None = None
    key: str | None = "name"
    public: bool = False
    any_service: bool = False  # any authenticated service (the API's own description)
    audited: bool = True  # False only for the load balancers' probes and metrics scrapes
    own_statuses: tuple[str, ...] = ()  # error statuses whose answer the route describes

    def operation_for(self, params: dict[str, Any]) -> str | None:
        if self.operation is None:
            return None
        # "datakey:{kind}": the operation depends on the path.
        return self.operation.format(**params) if "{" in self.operation else self.operation


def route(operation: str | None = None, *, key: str | None = "name") -> dict[str, Any]:
    """A route handler's ``opt``: the operation (and key parameter) the gate authorizes."""
    return {ROUTE: RouteSpec(operation, key)}


# Public routes (liveness, metrics) are not audited: a probe must answer while the database
# is away, and a scrape every few seconds would drown the trail.
PUBLIC: dict[str, Any] = {ROUTE: RouteSpec(public=True, key=None, audited=False)}
# Health answers 503 with its own body (which part is down), not the error shape.
HEALTH: dict[str, Any] = {
    ROUTE: RouteSpec(public=True, key=None, own_statuses=("503",), audited=False)
}
ANY_SERVICE: dict[str, Any] = {ROUTE: RouteSpec(key=None, any_service=True)}


class _RequestIds:
    """Request ids shaped like Vault's UUIDs: a random per-process part and a counter
    (unique, cheap, and useful for correlating logs; not a secret)."""

    def __init__(self) -> None:
        rnd = uuid.uuid4().hex
        self._head = f"{rnd[:8]}-{rnd[8:12]}-4{rnd[13:16]}-{rnd[16:20]}-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._head}{next(self._counter) & 0xFFFFFFFFFFFF:012x}"


request_ids = _RequestIds()


@dataclass(slots=True)
class Call:
    request_id: str
    method: str
    path: str
    client: str
    started: float = field(default_factory=time.perf_counter)
    vault: Vault = field(default=None)  # type: ignore[assignment]  # set by the gate
    principal: Principal | None = None
    operation: str | None = None
    key: str | None = None
    key_version: int | None = None
    approval: str | None = None  # X-Vault-Approval: an approval request id (dual control)
    # How many values the operation processed successfully, where a batch's items count each
    # (handlers of batches set it); None: one when the request succeeded.
    items: int | None = None
    status: int = 0
    error: BaseException | None = None
    audited: bool = True
    # Keyed digests of the subjects the request's items name, one per item that names one.
    subjects: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()  # what the audit trail should note: "signature.invalid", ...
    evidence: dict[str, str] | None = None  # e.g. a partner's verified JWS (digest, signature)

    @property
    def service(self) -> str | None:
        return self.principal.service.name if self.principal is not None else None

    @property
    def caller(self) -> Principal:
        """The authenticated caller (every non-public route has one)."""
        assert self.principal is not None, "a public route asked for its caller"
        return self.principal


# How a route handler declares the call it is given (the gate passes it; Litestar only needs
# to know it is not a query parameter).
CallParam: TypeAlias = NamedDependency[Call]

current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("call", default=None)
