"""The vault's errors: what went wrong, in the domain's terms. Itsdangerous' ``exc.py`` is the
model: a short hierarchy, each class one kind of failure, no transport in it.

``str(error)`` is the reason a caller may be shown: short, never key material, plaintext,
seed, PIN or an internal detail. How a kind of error is answered (an HTTP status, an exit
code) is decided by whoever talks to the outside, in one table of its own (``api/errors.py``).
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "HsmUnavailable",
    "InvalidCiphertext",
    "KeyVersionUnavailable",
    "NotFound",
    "RateLimited",
    "StoreUnavailable",
    "Unauthorized",
    "Unavailable",
    "VaultError",
]


class VaultError(Exception):
    """Base class; ``str(error)`` is what the caller sees."""

    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class BadRequest(VaultError):
    """The request cannot be done as asked: malformed, out of range, not allowed for this
    key. Nothing was changed."""

    default_message = "bad request"


class InvalidCiphertext(BadRequest):
    """Every authentication failure looks the same to the caller (no oracle)."""

    default_message = "invalid ciphertext: message authentication failed"

    def __init__(self) -> None:
        super().__init__(self.default_message)


class KeyVersionUnavailable(BadRequest):
    """A key version that does not exist, or that the key's configuration does not allow
    for this use (the one rule: ``Key.version_to_use`` / ``Key.version_to_check``)."""


class Unauthorized(VaultError):
    """No valid credential: missing, malformed, expired, revoked or not ours.

    ``service``: the known service the token claimed to be from, if any (for the audit trail;
    a claim, not an identity)."""

    default_message = "permission denied: invalid or missing token"

    def __init__(self, message: str | None = None, *, service: str | None = None) -> None:
        super().__init__(message)
        self.service = service


class Forbidden(VaultError):
    """A valid caller that no policy allows to do this."""

    default_message = "permission denied"


class NotFound(VaultError):
    default_message = "not found"


class RateLimited(VaultError):
    default_message = "rate limit exceeded"

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class Unavailable(VaultError):
    """Something the vault depends on cannot be used now; the same request may succeed
    later, and the service recovers by itself."""

    default_message = "service unavailable"


class HsmUnavailable(Unavailable):
    default_message = "HSM unavailable"


class StoreUnavailable(Unavailable):
    default_message = "database unavailable"


class ConfigError(VaultError):
    """Bad configuration or policy file: refused at start, or by the officers' tool."""

    default_message = "configuration error"
