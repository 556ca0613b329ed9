"""RFC 6238 (TOTP): the time-step counter."""

from __future__ import annotations

import math

from vault.otp._errors import OtpInputError


def time_step(unix_time: float, period: int, t0: int = 0) -> int:
    """``T = floor((unix_time - t0) / period)`` (RFC 6238 §4.2).

    ``period`` is any positive number of seconds here: OCRA (RFC 6287 §6.3) allows steps of up
    to 48 hours, so the TOTP range (1..300 s) is enforced by ``plan_totp``, not here.
    """
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise OtpInputError("period", "must be a positive whole number of seconds")
    if isinstance(t0, bool) or not isinstance(t0, int) or t0 < 0:
        raise OtpInputError("t0", "must be a non-negative whole number of seconds")
    if not math.isfinite(unix_time):
        raise OtpInputError("time", "must be a finite number of seconds")
    if unix_time < t0:
        raise OtpInputError("time", "is before t0")
    # floor(floor(x) / p) == floor(x / p) for whole p > 0, and integer division stays exact
    # where float division would round (RFC 6238 §4.2 wants the floor, also past 2038).
    return math.floor(unix_time - t0) // period
