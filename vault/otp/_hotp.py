"""RFC 4226 (HOTP): the counter message and dynamic truncation. The HMAC itself is the HSM's."""

from __future__ import annotations

from vault.otp._errors import OtpInputError

COUNTER_MAX = 2**64 - 1
MIN_DIGITS = 4
MAX_DIGITS = 10
# Dynamic truncation reads 4 bytes at an offset of at most 15 (RFC 4226 §5.3), so any MAC of
# 20 bytes or more (HMAC-SHA-1 and longer) can be truncated.
_MIN_MAC_LENGTH = 20


def counter_message(counter: int) -> bytes:
    """The 8-byte big-endian moving factor of RFC 4226 §5.2 (also TOTP's T, OCRA's C)."""
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise OtpInputError("counter", "must be an integer")
    if not 0 <= counter <= COUNTER_MAX:
        raise OtpInputError("counter", "must be between 0 and 2^64-1")
    return counter.to_bytes(8, "big")


def truncate(mac: bytes, digits: int) -> str:
    """Dynamic truncation (RFC 4226 §5.3) of ``mac`` to a zero-padded decimal code.

    RFC 4226 §5.3 asks HOTP for at least 6 digits (``plan_hotp``/``plan_totp`` enforce 6..10),
    but OCRA suites may ask for 4 or 5 (RFC 6287 §6.2), so this accepts 4..10. At 10 digits
    the modulus 10^10 exceeds the 31-bit value, so the code is that value, zero-padded.
    """
    if isinstance(digits, bool) or not isinstance(digits, int):
        raise OtpInputError("digits", "must be an integer")
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise OtpInputError("digits", f"must be between {MIN_DIGITS} and {MAX_DIGITS}")
    if len(mac) < _MIN_MAC_LENGTH:
        # The MAC comes from the HSM, not the caller: a short one is a bug, not a bad request.
        raise ValueError(f"MAC too short for dynamic truncation: {len(mac)} bytes")
    offset = mac[-1] & 0x0F
    # The top bit is masked so the value reads the same signed or unsigned (RFC 4226 §5.3).
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)
