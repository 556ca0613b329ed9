"""The one table from error to HTTP answer. Nothing else in the service picks a status for an
error: the gate asks :func:`problem` for every exception a request raises, whichever stage
raised it.

Domain errors (``vault.errors``) carry no status; the HTTP-only conditions (no such route,
wrong method, body too large) are defined here. Any other exception is a bug: a JSON 500
with nothing of its text, logged once with the request id by the gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from vault.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    VaultError,
)


class HttpError(Exception):
    """A condition of the HTTP exchange itself, not of the domain."""

    default_message = "bad request"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class RouteNotFound(HttpError):
    default_message = "unsupported path"


class MethodNotAllowed(HttpError):
    default_message = "unsupported operation"


class BodyTooLarge(HttpError):
    default_message = "request body too large"


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    unexpected: bool = False  # a bug: logged with its traceback


# Most specific first: the first class an error is an instance of decides.
TABLE: tuple[tuple[type[Exception], int], ...] = (
    (BadRequest, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (RouteNotFound, 404),
    (MethodNotAllowed, 405),
    (BodyTooLarge, 413),
    (RateLimited, 429),
    (Unavailable, 503),
    (ConfigError, 500),
    (VaultError, 500),
)
INTERNAL = "internal error"

# Every status an answer may carry. The gate refuses to send any other (a bug, or a caller's
# partial_failure_response_code that slipped through): a wrong status must never reach the
# HTTP server, whose worker would die on it.
SUCCESS_STATUSES = frozenset({200, 204})
# What a caller may ask a partly failed batch to be answered with: a registered success
# that carries a body, or a registered client or server error (RFC 9110 §15).
PARTIAL_FAILURE_STATUSES = frozenset(
    s.value
    for s in HTTPStatus
    if (200 <= s.value < 300 and s.value not in (204, 205)) or 400 <= s.value < 600
)
STATUSES = frozenset(s for _, s in TABLE) | SUCCESS_STATUSES | PARTIAL_FAILURE_STATUSES


def problem(exc: BaseException) -> Problem:
    for cls, status in TABLE:
        if isinstance(exc, cls):
            if status >= 500 and not isinstance(exc, Unavailable):
                return Problem(status, INTERNAL, unexpected=True)
            headers: tuple[tuple[bytes, bytes], ...] = ()
            if isinstance(exc, RateLimited):
                headers = ((b"retry-after", str(exc.retry_after).encode()),)
            return Problem(status, str(exc), headers)
    return Problem(500, INTERNAL, unexpected=True)
