"""The OpenAPI document: Litestar describes the routes and their bodies; this module says
what each route answers, in one place, so the document tells the truth.

- Success: Vault's envelope around the route's ``data`` (``answers(...)`` on the route).
- Errors: ``{"errors": [...], "request_id": ...}`` for every status the gate or the route can
  send (401/403 wherever a token is needed, 413 wherever there is a body, 429 and 503
  everywhere a request does work, 500 everywhere).
- Security: ``X-Vault-Token`` (or ``Authorization: Bearer``) on every route but health.
- Schemas: msgspec's own JSON Schema of each struct, so integer bounds and lengths survive.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.datastructures import ResponseSpec

from api.call import ROUTE, RouteSpec
from api.schemas import Error, envelope

_REF = "#/components/schemas/{name}"
_ERROR_REF = {"$ref": _REF.format(name="Error")}
_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request, bad value, or a ciphertext that does not authenticate",
    401: "Missing, invalid, expired or revoked token",
    403: "The token's service may not do this operation on this key",
    404: "Unknown key or path",
    405: "Method not allowed on this path",
    413: "Request body too large",
    429: "Over a rate limit or quota (see Retry-After)",
    500: "Internal error (quote the request id)",
    503: "HSM or database unavailable; retry later",
}
_PUBLIC_ERRORS = (500, 503)
_ERRORS = (400, 401, 403, 404, 429, 500, 503)


@cache
def _data(*shapes: type[msgspec.Struct]) -> Any:
    """The ``data`` of a route that answers with one of several shapes (a single item or a
    batch): every field of each, all optional."""
    if len(shapes) == 1:
        return shapes[0]
    fields: dict[str, Any] = {}
    for shape in shapes:
        for field in msgspec.structs.fields(shape):
            fields.setdefault(field.name, field.type | msgspec.UnsetType)
    name = "Or".join(s.__name__ for s in shapes)
    return msgspec.defstruct(
        name, [(n, t, msgspec.UNSET) for n, t in fields.items()], kw_only=True, omit_defaults=True
    )


@cache
def _envelope(data: Any) -> type[msgspec.Struct]:
    return envelope(f"{data.__name__}Reply", data)


def answers(*shapes: type[msgspec.Struct], batch_statuses: bool = False) -> dict[int, ResponseSpec]:
    """The success answer of a route: Vault's envelope around ``shapes``."""
    data = _data(*shapes)
    spec = ResponseSpec(_envelope(data), description="Success", generate_examples=False)
    specs = {200: spec}
    if batch_statuses:
        # partial_failure_response_code: any 2xx/4xx/5xx the caller chose (finalize() turns
        # these into ranges).
        specs[207] = spec
    return specs


_published: list[Litestar] = []


def publish(app: Litestar) -> None:
    """Make ``app``'s routes the ones :func:`published` describes."""
    _published[:] = [app]
    _document.cache_clear()


def published() -> dict[str, Any]:
    """The finished document of the published routes (built once)."""
    return _document(_published[0])


@cache
def _document(app: Litestar) -> dict[str, Any]:
    return finalize(app, app.openapi_schema.to_schema())


def finalize(app: Litestar, document: dict[str, Any]) -> dict[str, Any]:
    """Litestar's document with the truth added: error answers, security, msgspec schemas,
    and only the routes the gate serves."""
    structs: set[Any] = {Error}
    routes = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            spec = handler.opt.get(ROUTE)
            if not isinstance(spec, RouteSpec):
                continue
            for method in handler.http_methods:
                routes[(route.path_format, method.lower())] = (spec, handler)
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None:
                structs.add(data.annotation)
            for response in (handler.responses or {}).values():
                if response.data_container is not None:
                    structs.add(response.data_container)
    paths: dict[str, Any] = {}
    for path, operations in document.get("paths", {}).items():
        kept = {}
        for method, operation in operations.items():
            found = routes.get((path, method))
            if found is None:
                continue
            spec, handler = found
            kept[method] = _operation(operation, spec, has_body="requestBody" in operation)
        if kept:
            paths[path] = kept
    document["paths"] = paths
    _, components = msgspec.json.schema_components(sorted(structs, key=repr), ref_template=_REF)
    document.setdefault("components", {})["schemas"] = components
    document["components"]["securitySchemes"] = {
        "VaultToken": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Vault-Token",
            "description": "The calling service's signed JWT (as Vault clients send a token)",
        },
        "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    return document


def _operation(operation: dict[str, Any], spec: RouteSpec, *, has_body: bool) -> dict[str, Any]:
    declared = operation.get("responses", {})
    # Litestar adds a default 201 to POST routes and its own 400 shape: the gate sends
    # neither. What a route declared itself (answers(...)) stays.
    responses = {
        code: answer
        for code, answer in declared.items()
        if code != "201" and (code.startswith("2") or code in spec.own_statuses)
    }
    batch = responses.pop("207", None)
    if batch is not None:
        # A batch with failed items is answered 400, or the partial_failure_response_code
        # the caller chose (any registered 2xx, 4xx or 5xx), with the batch results.
        responses["2XX"] = batch
        for code in ("4XX", "5XX"):
            responses[code] = batch | {"description": "A batch answer with failed items"}
    statuses = _PUBLIC_ERRORS if spec.public else _ERRORS + ((413,) if has_body else ())
    for status in sorted(statuses):
        if str(status) in responses:
            continue
        schema: dict[str, Any] = _ERROR_REF
        if batch is not None:
            # Any of these may also carry the batch results (a failed item: 400; or the
            # code the caller chose).
            schema = {"anyOf": [_ERROR_REF, batch["content"]["application/json"]["schema"]]}
        answer: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {"application/json": {"schema": schema}},
        }
        if status == 429:
            answer["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}
        responses[str(status)] = answer
    operation["responses"] = responses
    operation["security"] = [] if spec.public else [{"VaultToken": []}, {"Bearer": []}]
    return operation
