"""The one gate: every request passes the same ordered stages, whatever serves it.

    request id → route → authentication (before any body byte is read) → authorization
    → body (bounded, decoded once) → admission (``Stage.admit``: subjects, single-use
    tokens, quotas; before any HSM work) → handler → one error mapping → the audit record
    (``Stage.record``: every request, refused ones too; if it cannot be kept the request
    fails) → metrics and the request log → answer

The gate is the application itself — ASGI, and RSGI (granian's own interface, which
``hsm-vault serve`` runs: no per-request message dicts) into the same ``_handle`` — so
nothing can be mounted beside it and nothing added later can skip a stage. Routing uses
Litestar's router over the route declarations in ``api/`` (which also give the OpenAPI
document); the gate then calls the route's handler directly with the request's
:class:`~api.call.Call`, its path parameters and its decoded body: Litestar's per-request
machinery (its signature model, dependency injection and response objects) costs about as
much as the HSM call and is not used.

No request can stop the server: every status sent comes from a known set, an unexpected
exception is a JSON 500 for that request alone (logged once with its request id and
counted), and a lifespan start-up touches neither the HSM nor the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from litestar import Litestar
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.utils import normalize_path

from api import call as calls
from api import metrics
from api.call import ROUTE, Call, RouteSpec
from api.errors import (
    STATUSES,
    BodyTooLarge,
    MethodNotAllowed,
    Problem,
    RouteNotFound,
    problem,
)
from api.responses import Reply, error_body, raw
from vault.auth import Peer
from vault.errors import BadRequest, Forbidden, Unauthorized
from vault.logs import JsonLines
from vault.runtime import Vault

# ASGI, as plainly as the gate uses it.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("vault.api")

OPENAPI_JSON = "/v1/sys/openapi/openapi.json"
_EMPTY_BODY: bytes = b""


class Stage(Protocol):
    """A cross-cutting stage the gate runs for every request (quota, audit)."""

    async def admit(self, call: Call, body: Any) -> None:
        """After authorization and the body's decoding, before the handler (and so before
        any HSM work): raise to refuse the request."""

    async def record(self, call: Call) -> None:
        """Once the outcome is known (``call.status``, ``call.error``), before the answer
        leaves, for every request, refused ones included: raise and the request fails
        (fail closed)."""


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved route handler: how the gate calls it."""

    handler: Callable[..., Awaitable[Reply | None]]  # None: 204, nothing to say
    spec: RouteSpec
    decoder: msgspec.json.Decoder[Any] | None  # None: the route takes no body
    body_required: bool


def _route_of(handler: HTTPRouteHandler) -> Route | None:
    spec = handler.opt.get(ROUTE)
    if not isinstance(spec, RouteSpec):
        return None  # not one of ours (Litestar's own routes): unreachable, fail closed
    data = handler.parsed_fn_signature.parameters.get("data")
    decoder = msgspec.json.Decoder(data.annotation) if data is not None else None
    required = data is not None and not data.is_optional
    return Route(handler.fn, spec, decoder, required)


APPROVAL_HEADER = b"x-vault-approval"
_APPROVAL_MAX = 64


def approval_of(scope: Scope) -> str | None:
    """``X-Vault-Approval``: the approval request that allows a key deletion, a trim or a
    lowered ``min_decryption_version`` (vault/approvals.py)."""
    for name, value in scope["headers"]:
        if name == APPROVAL_HEADER and value:
            return str(value[:_APPROVAL_MAX].decode("latin-1").strip())
    return None


def token_of(scope: Scope) -> str | None:
    """``X-Vault-Token`` (what Vault clients send) or ``Authorization: Bearer``."""
    bearer = None
    for name, value in scope["headers"]:
        if name == b"x-vault-token" and value:
            return str(value.decode("latin-1"))
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip().decode("latin-1")
    return bearer


def peer_of(scope: Scope, address: str) -> Peer:
    """The source address and, over mutual TLS, the client's certificate (the ASGI TLS
    extension's ``client_cert_chain``, leaf first)."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if extensions else None
    chain = tls.get("client_cert_chain") if tls else None
    return Peer(address, chain[0] if chain else None)


def decode_body(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """The request body as the route's struct. Every way JSON can be wrong is a 400 — also
    in fields the route ignores: JSON text is UTF-8 (RFC 8259 §8.1)."""
    try:
        body.decode("utf-8")
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON in request body: {exc}") from None
    except UnicodeDecodeError:
        raise BadRequest("malformed JSON in request body: invalid UTF-8") from None
    except RecursionError:
        raise BadRequest("malformed JSON in request body: nested too deeply") from None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, chunked or not, refused as soon as it passes ``limit`` bytes."""
    return await _bounded(_asgi_chunks(receive), limit)


async def _asgi_chunks(receive: Receive) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionAbortedError("the client went away")
        yield message.get("body", b"")
        more = bool(message.get("more_body", False))


async def _bounded(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The chunks joined, refused as soon as they pass ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class BodySource(Protocol):
    async def read(self, limit: int) -> bytes:
        """The whole body, refused (``BodyTooLarge``) as soon as it passes ``limit``."""


class _AsgiBody:
    __slots__ = ("_receive",)

    def __init__(self, receive: Receive) -> None:
        self._receive = receive

    async def read(self, limit: int) -> bytes:
        return await read_body(self._receive, limit)


class _RsgiBody:
    """An RSGI request's body: read at once when its length is declared and allowed
    (refused before any byte when it is not), chunk by chunk otherwise."""

    __slots__ = ("_length", "_proto")

    def __init__(self, proto: Any, length: str | None) -> None:
        self._proto = proto
        self._length = length

    async def read(self, limit: int) -> bytes:
        length = self._length
        try:
            if length is not None and length.isdigit():
                if int(length) > limit:
                    raise BodyTooLarge()
                return bytes(await self._proto())
            return await _bounded(self._proto, limit)
        except (ProtocolClosed, ProtocolError):
            raise ConnectionAbortedError("the client went away") from None


class Gate:
    """The ASGI application: the Litestar app is only its route table and its document."""

    def __init__(
        self,
        routes: Litestar,
        open_vault: Callable[[], Vault],
        *,
        max_body: int,
        stages: tuple[Stage, ...] = (),
        on_startup: Sequence[Callable[[], None]] = (),
        on_shutdown: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.routes = routes
        self._router = routes.asgi_router
        self._on_startup = tuple(on_startup)
        self._on_shutdown = tuple(on_shutdown)
        # One JSON line per request (vault.request), written in batches (vault/logs.py).
        self._request_log = JsonLines("vault.request")
        self._open_vault = open_vault
        self._max_body = max_body
        self._stages = stages
        self._routes: dict[Any, Route | None] = {}
        self._background: list[asyncio.Task[None]] = []
        self.vault: Vault | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:  # websockets: none here
            await send({"type": "websocket.close", "code": 1003})

    # -- lifespan: build the vault (no I/O beyond the policy files), close it at the end; --
    # -- the server's own hooks (metrics, the worker watchdog) run on the event loop      --

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """A worker's start: the vault (no HSM or database I/O) and its background work,
        then the server's hooks. Raises only if the vault cannot be built (its policies)."""
        try:
            self._vault()
        except Exception as exc:
            log.error("start-up failed: %s", exc)
            raise
        # The server's hooks (metrics, watchdog) must never fail a worker's start:
        # a worker that cannot start makes granian give up on the whole server.
        self._run_hooks(self._on_startup, "start-up")

    async def shutdown(self) -> None:
        await self._stop_background()
        self._run_hooks(self._on_shutdown, "shutdown")
        if self.vault is not None:
            self.vault.close()
        self._request_log.flush()

    # -- RSGI: granian's own interface, what ``hsm-vault serve`` runs (cheaper per request --
    # -- than ASGI's message dicts); the same gate behind it                               --

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.startup())  # the loop is not running yet

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.shutdown())  # the loop has stopped serving

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":  # websockets: none here (serve turns them off)
            return
        method: str = scope.method
        asgi_like = {
            "method": method,
            "path": scope.path,
            "headers": [
                (n.encode("latin-1"), v.encode("latin-1")) for n, v in scope.headers.items()
            ],
        }
        length = scope.headers.get("content-length")
        call = Call(
            calls.request_ids.next(),
            method,
            scope.path,
            scope.client.rpartition(":")[0].strip("[]"),
        )
        reply = await self._handle(call, asgi_like, _RsgiBody(proto, length))
        headers, body = _answer(call, reply, head=method == "HEAD")
        with contextlib.suppress(ProtocolClosed):  # the client went away: nothing to answer
            proto.response_bytes(
                reply.status, [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers], body
            )
        self._done(call)

    @staticmethod
    def _run_hooks(hooks: tuple[Callable[[], None], ...], when: str) -> None:
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("a %s hook failed", when)

    def _vault(self) -> Vault:
        """The worker's vault, opened at start-up (or at the first request, for a server
        that sends no lifespan events), with its background work (automatic rotation)."""
        if self.vault is None:
            self.vault = self._open_vault()
            self._background = [asyncio.create_task(c) for c in self.vault.background()]
        return self.vault

    async def _stop_background(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        self._background = []

    # -- one request -----------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_scope: Any = scope
        client = raw_scope.get("client")
        call = Call(
            calls.request_ids.next(),
            raw_scope["method"],
            raw_scope["path"],
            client[0] if client else "",
        )
        reply = await self._handle(call, raw_scope, _AsgiBody(receive))
        await self._send(call, reply, send, head=call.method == "HEAD")
        self._done(call)

    async def _handle(self, call: Call, scope: Any, body: BodySource) -> Reply:
        """The request's answer, its audit record kept (or the failure that replaces it)."""
        token = calls.current.set(call)
        try:
            try:
                reply = await self._serve(call, scope, body)
            except Exception as exc:
                reply = self._failure(call, exc)
            reply = self._checked(call, reply)
            try:
                for stage in self._stages:
                    await stage.record(call)
            except Exception as exc:  # the request's record could not be kept: fail closed
                reply = self._checked(call, self._failure(call, exc))
        finally:
            calls.current.reset(token)
        return reply

    def _done(self, call: Call) -> None:
        """After the answer: metrics and the request log."""
        metrics.observe(call, time.perf_counter() - call.started)
        self._request_log.write(
            {
                "request": {
                    "request_id": call.request_id,
                    "method": call.method,
                    "path": call.path,
                    "service": call.service,
                    "operation": call.operation,
                    "key": call.key,
                    "key_version": call.key_version,
                    "status": call.status,
                    "error": type(call.error).__name__ if call.error is not None else None,
                    "duration_ms": round((time.perf_counter() - call.started) * 1000, 3),
                    "client": call.client,
                }
            }
        )

    async def _serve(self, call: Call, scope: Any, source: BodySource) -> Reply:
        call.vault = self._vault()
        route, params = self._resolve(scope)
        spec = route.spec
        call.audited = spec.audited
        if not spec.public:
            principal = await call.vault.authenticator.authenticate(
                token_of(scope), peer_of(scope, call.client)
            )
            call.principal = principal
            call.approval = approval_of(scope)
            call.operation = spec.operation_for(params)
            key = params.get(spec.key) if spec.key is not None else None
            call.key = key if isinstance(key, str) else None
            if not spec.any_service and (
                call.operation is None or not principal.service.allows(call.operation, call.key)
            ):
                raise Forbidden()
        if route.decoder is not None:
            body = await source.read(self._max_body)
            if body.strip():
                params["data"] = decode_body(route.decoder, body)
            elif route.body_required:
                raise BadRequest("missing request body")
        for stage in self._stages:
            await stage.admit(call, params.get("data"))
        reply = await route.handler(call=call, **params)
        return _NO_CONTENT if reply is None else reply

    def _resolve(self, scope: Any) -> tuple[Route, dict[str, Any]]:
        method = scope["method"]
        if method == "LIST":  # Vault clients send LIST; it is GET ...?list=true
            method = "GET"
        elif method == "PUT":  # Vault treats PUT as POST
            method = "POST"
        try:
            _, handler, _, params, _ = self._router.handle_routing(
                path=normalize_path(scope["path"]), method=method
            )
        except NotFoundException:
            raise RouteNotFound() from None
        except MethodNotAllowedException:
            raise MethodNotAllowed() from None
        route = self._routes.get(handler, _UNSEEN)
        if route is _UNSEEN:
            route = self._routes[handler] = (
                _route_of(handler) if isinstance(handler, HTTPRouteHandler) else None
            )
        if route is None:
            raise RouteNotFound()
        return route, dict(params)

    def _failure(self, call: Call, exc: Exception) -> Reply:
        call.error = exc
        found: Problem = problem(exc)
        if found.unexpected:
            log.error(
                "unexpected %s (request %s)",
                type(exc).__name__,
                call.request_id,
                exc_info=exc,
            )
            metrics.UNEXPECTED.inc()
        elif found.status >= 500:
            log.warning("request %s failed: %s", call.request_id, type(exc).__name__)
        reason = found.reason
        if found.unexpected:  # the one id to quote when asking what went wrong
            reason = f"{reason} (request {call.request_id})"
        return Reply(error_body(reason), found.status, found.headers)

    @staticmethod
    def _checked(call: Call, reply: Reply) -> Reply:
        """Only a status from the known set ever reaches the server (whose worker would die
        on an invalid one)."""
        if reply.status not in STATUSES:
            log.error("refused to send status %s (request %s)", reply.status, call.request_id)
            reply = Reply(error_body(f"internal error (request {call.request_id})"), 500)
        call.status = reply.status
        return reply

    async def _send(self, call: Call, reply: Reply, send: Send, *, head: bool) -> None:
        headers, body = _answer(call, reply, head=head)
        try:
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except OSError:  # the client went away: nothing to answer
            return


def _answer(call: Call, reply: Reply, *, head: bool) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The answer's headers and the body to send (none for HEAD or 204), whichever interface
    sends them."""
    headers = [(b"x-request-id", call.request_id.encode())]
    if reply.status != 204:
        headers.append((b"content-type", reply.content_type))
        headers.append((b"content-length", str(len(reply.body)).encode()))
    headers.extend(reply.headers)
    return headers, _EMPTY_BODY if head or reply.status == 204 else reply.body


_UNSEEN: Any = object()
_NO_CONTENT = Reply(b"", 204)


def unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message)


def document(routes: Litestar) -> Reply:
    return raw(routes.openapi_schema.to_schema())
