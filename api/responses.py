"""Vault's response envelope and error body, encoded once with msgspec.

Success responses are sent by a minimal ASGI callable: the handlers already hold the
encoded body, and a framework response object per request costs more than the HSM call.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import msgspec
from litestar import Response
from litestar.types import Receive, Scope, Send
from prometheus_client import Counter

from vault.errors import RateLimited, VaultError

_encoder = msgspec.json.Encoder()
ERRORS = Counter(
    "vault_request_errors_total", "Requests answered with an error, by status", ["status"]
)
JSON = "application/json"
_JSON_HEADER = (b"content-type", b"application/json")


class JsonResponse:
    """An ASGI app that sends one JSON body (exactly ``application/json``, as hvac wants)."""

    __slots__ = ("body", "extra_headers", "status")

    def __init__(
        self, body: bytes, status: int = 200, extra_headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.body = body
        self.status = status
        self.extra_headers = extra_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [_JSON_HEADER] if self.status != 204 else []
        headers.append((b"content-length", str(len(self.body)).encode()))
        if self.extra_headers:
            headers.extend(self.extra_headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


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


def ok(data: dict[str, Any] | None, status: int = 200) -> JsonResponse:
    """Vault's success envelope (204 with no body when there is nothing to say)."""
    if data is None:
        return JsonResponse(b"", 204)
    body = {
        "request_id": request_ids.next(),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }
    return JsonResponse(_encoder.encode(body), status)


def encode(value: Any) -> bytes:
    return _encoder.encode(value)


def error_json(exc: VaultError) -> JsonResponse:
    """A vault error as the fast path sends it (the same body as :func:`error`)."""
    ERRORS.labels(str(exc.status)).inc()
    return JsonResponse(_encoder.encode({"errors": [str(exc)]}), exc.status, retry_headers(exc))


def retry_headers(exc: VaultError) -> list[tuple[bytes, bytes]]:
    if isinstance(exc, RateLimited):
        return [(b"retry-after", str(exc.retry_after).encode())]
    return []


def error(status: int, *messages: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=_encoder.encode({"errors": list(messages)}),
        status_code=status,
        media_type=JSON,
        headers=headers,
    )
