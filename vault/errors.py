"""The vault's error hierarchy. ``api/`` maps each class to one HTTP status, in one place.

Messages are short and safe to show a caller: never key material, plaintext, seed or PIN.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "HsmUnavailable",
    "InvalidCiphertext",
    "NotFound",
    "RateLimited",
    "StoreUnavailable",
    "Unauthorized",
    "VaultError",
]


class VaultError(Exception):
    """Base class; ``str(error)`` is what the caller sees."""

    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class BadRequest(VaultError):
    status = 400
    default_message = "bad request"


class InvalidCiphertext(BadRequest):
    """Every authentication failure looks the same to the caller (no oracle)."""

    default_message = "invalid ciphertext: message authentication failed"

    def __init__(self) -> None:
        super().__init__(self.default_message)


class Unauthorized(VaultError):
    status = 401
    default_message = "permission denied: invalid or missing token"


class Forbidden(VaultError):
    status = 403
    default_message = "permission denied"


class NotFound(VaultError):
    status = 404
    default_message = "not found"


class RateLimited(VaultError):
    status = 429
    default_message = "rate limit exceeded"

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HsmUnavailable(VaultError):
    status = 503
    default_message = "HSM unavailable"


class StoreUnavailable(VaultError):
    status = 503
    default_message = "database unavailable"


class ConfigError(VaultError):
    """Bad configuration or policy file: stops the service at start."""

    status = 500
    default_message = "configuration error"
