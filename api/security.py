"""The one gate every ``/v1`` route passes: authenticate the service, then authorize the
operation on the key. A route that declares no operation is refused (fail closed)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from vault.auth import Principal
from vault.errors import Forbidden
from vault.runtime import Runtime

PUBLIC = "public"
OPENAPI_PATH = "/v1/sys/openapi"
OPERATION = "op"


_PRINCIPAL = "hsm_vault.principal"  # where the verified caller is kept in the ASGI scope


def token_of(scope: Any) -> str | None:
    """``X-Vault-Token`` (what Vault clients send) or ``Authorization: Bearer``."""
    bearer = None
    for name, value in scope["headers"]:
        if name == b"x-vault-token" and value:
            return value.decode("latin-1")  # type: ignore[no-any-return]
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip().decode("latin-1")
    return bearer


def operation_of(handler: BaseRouteHandler, path_params: dict[str, Any]) -> str | None:
    op = handler.opt.get(OPERATION)
    if op == "datakey":
        return f"datakey:{path_params.get('kind')}"
    return op if isinstance(op, str) else None


async def authorize(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """A ``before_request`` hook: runs before the body is parsed and the handler called.

    (A Litestar guard would do as well, but costs a copy of the route handler per request;
    this works on the raw ASGI scope because it runs on every request.)
    """
    scope: Any = connection.scope
    handler: BaseRouteHandler = scope["route_handler"]
    if handler.opt.get(PUBLIC):
        return
    runtime: Runtime = scope["litestar_app"].state.runtime
    principal = runtime.authenticator.authenticate(token_of(scope))
    if scope["path"].startswith(OPENAPI_PATH):
        scope[_PRINCIPAL] = principal  # the API's description: any authenticated service
        return
    path_params = scope["path_params"]
    operation = operation_of(handler, path_params)
    scope[_PRINCIPAL] = check(principal, operation, path_params.get("name"))


def check(principal: Principal, operation: str | None, key: str | None) -> Principal:
    """Deny by default: the caller needs a grant naming the operation and matching the key."""
    if operation is None or not principal.service.allows(operation, key):
        raise Forbidden()
    return principal


def principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    found: Principal = connection.scope[_PRINCIPAL]  # type: ignore[literal-required]
    return found
