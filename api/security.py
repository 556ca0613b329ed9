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


def token_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """``X-Vault-Token`` (what Vault clients send) or ``Authorization: Bearer``."""
    bearer = None
    for name, value in connection.scope["headers"]:
        if name == b"x-vault-token" and value:
            return value.decode("latin-1")
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip().decode("latin-1")
    return bearer


def operation_of(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> str | None:
    op = handler.opt.get(OPERATION)
    if op == "datakey":
        return f"datakey:{connection.path_params.get('kind')}"
    return op if isinstance(op, str) else None


async def authorize(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """A ``before_request`` hook: runs before the body is parsed and the handler called.

    (A Litestar guard would do as well, but costs a copy of the route handler per request.)
    """
    handler = connection.route_handler
    if handler.opt.get(PUBLIC) or connection.scope["path"].startswith(OPENAPI_PATH):
        return
    runtime: Runtime = connection.app.state.runtime
    principal = runtime.authenticator.authenticate(token_of(connection))
    operation = operation_of(connection, handler)
    key = connection.path_params.get("name")
    if operation is None or not principal.service.allows(operation, key):
        raise Forbidden()
    connection.state.principal = principal


def principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    found: Principal = connection.state.principal
    return found
