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
