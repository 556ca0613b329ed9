"""The hottest single-message routes, served without the framework's per-request machinery.

``encrypt``, ``decrypt``, ``sign``, ``hmac`` and ``otp/verify`` of one item are most of a
busy vault's traffic, and the framework's routing, parameter model and response objects cost
about as much per request as the HSM call. For these routes a well-formed request is decoded
here with the same msgspec struct, authorized with the same check, and answered by the same
function as the Litestar route (``api/transit.py``, ``api/signing.py``, ``api/otp.py``); the
outcome is identical.
Anything else — a batch, a body that does not decode, an oversized or chunked body, another
method or path — goes to the Litestar application untouched (the body already read is
replayed), so there is one definition of every error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar
from litestar.types import ASGIApp, Receive, Scope, Send

from api.otp import VerifyBody, verify_one
from api.responses import JsonResponse, error_json
from api.schemas import EncryptBody
from api.security import check, token_of
from api.signing import SignBody, hmac_one, sign_one
from api.transit import decrypt_one, encrypt_one
from vault.auth import Principal
from vault.errors import VaultError
from vault.runtime import Runtime

Handler = Callable[[Runtime, Principal, str, Any], Awaitable[JsonResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    operation: str
    decoder: msgspec.json.Decoder[Any]
    handler: Handler


def _single(data: Any) -> bool:
    return getattr(data, "batch_input", None) is None


ROUTES: dict[str, Route] = {
    "/v1/transit/encrypt/": Route("encrypt", msgspec.json.Decoder(EncryptBody), encrypt_one),
    "/v1/transit/decrypt/": Route("decrypt", msgspec.json.Decoder(EncryptBody), decrypt_one),
    "/v1/transit/sign/": Route("sign", msgspec.json.Decoder(SignBody), sign_one),
    "/v1/transit/hmac/": Route("hmac", msgspec.json.Decoder(SignBody), hmac_one),
    "/v1/otp/verify/": Route("otp:verify", msgspec.json.Decoder(VerifyBody), verify_one),
}


def _content_length(scope: Any) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def fast_path(app: Litestar, inner: ASGIApp, max_body: int) -> ASGIApp:
    """Wrap ``inner`` (the Litestar app, perhaps wrapped) with the fast path."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        raw: Any = scope  # the ASGI dict; Litestar's TypedDicts are stricter than needed here
        if raw["type"] != "http" or raw["method"] != "POST":
            await inner(scope, receive, send)
            return
        path: str = raw["path"]
        prefix, _, name = path.rpartition("/")
        route = ROUTES.get(prefix + "/")
        length = _content_length(raw)
        if route is None or not name or length is None or length > max_body:
            await inner(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        try:
            data = route.decoder.decode(body)
        except msgspec.MsgspecError:
            data = None
        if data is None or not _single(data):
            await inner(scope, _replay(body, receive), send)
            return
        runtime: Runtime = app.state.runtime
        try:
            caller = check(
                runtime.authenticator.authenticate(token_of(scope)), route.operation, name
            )
            response = await route.handler(runtime, caller, name, data)
        except VaultError as exc:
            response = error_json(exc)
        await response(scope, receive, send)

    return serve
