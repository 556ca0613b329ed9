"""Vault's response envelope and error body, encoded once with msgspec.

A handler returns a :class:`Reply`: the encoded body, its status and extra headers. The gate
sends it (and only the gate sends anything), adding the request id; a framework response
object per request would cost more than the HSM call.
"""

from __future__ import annotations

from typing import Any

import msgspec

from api import call as calls

_encoder = msgspec.json.Encoder()
NO_STORE = (b"cache-control", b"no-store")


JSON = b"application/json"  # exactly this, as hvac wants


class Reply:
    """One answer: its body, status, content type and any extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes,
        status: int = 200,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        content_type: bytes = JSON,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers
        self.content_type = content_type


def _request_id() -> str:
    call = calls.current.get()
    return call.request_id if call is not None else calls.request_ids.next()


def ok(
    data: dict[str, Any] | None,
    status: int = 200,
    *,
    secret: bool = False,
    warnings: list[str] | None = None,
) -> Reply:
    """Vault's success envelope (204 with no body when there is nothing to say).

    ``secret``: the answer carries a plaintext, a data key or a seed, which no cache along
    the way may keep (``Cache-Control: no-store``)."""
    if data is None:
        return Reply(b"", 204)
    body = {
        "request_id": _request_id(),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": None,
    }
    return Reply(_encoder.encode(body), status, (NO_STORE,) if secret else ())


def raw(value: Any, status: int = 200) -> Reply:
    """A JSON document outside Vault's envelope (health, the OpenAPI document)."""
    return Reply(_encoder.encode(value), status)


def error_body(reason: str) -> bytes:
    """The contract's error shape; the request id travels in ``X-Request-Id``."""
    return _encoder.encode({"errors": [reason]})


def encode(value: Any) -> bytes:
    return _encoder.encode(value)
