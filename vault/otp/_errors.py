"""The one error the OTP layer raises for bad caller input."""

from __future__ import annotations

from vault.errors import BadRequest


class OtpInputError(BadRequest):
    """Malformed OTP input; ``field`` names the request field at fault.

    ``str(error)`` reaches the API caller, so messages name the field and the rule broken and
    never echo a seed, a password or a MAC.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid {field}: {message}")
        self.field = field


class OtpBindingMismatch(BadRequest):
    """An ``encrypted_seed`` presented with another token than it was bound to (its own
    class, so that the audit trail tells it from malformed input)."""

    def __init__(self) -> None:
        super().__init__("encrypted_seed is bound to another token_serial, app_id or dfp_hash")
