"""The service stops at the first matching candidate: that is the lowest position only if
every plan lists its candidates in ascending position."""

from __future__ import annotations

import pytest

from vault.otp import OcraSuite, VerifyPlan, check_code, is_code, plan_hotp, plan_ocra, plan_totp
from vault.otp._errors import OtpInputError


def _ascending(plan: VerifyPlan) -> bool:
    positions = [c.position for c in plan.candidates]
    return positions == sorted(positions) and len(set(positions)) == len(positions)


@pytest.mark.parametrize("window", [0, 1, 3, 10])
def test_plans_are_in_ascending_position(window: int) -> None:
    assert _ascending(plan_hotp(counter=7, window=window, digits=6, algorithm="sha1"))
    assert _ascending(
        plan_totp(now=1_700_000_000, period=30, window=min(window, 10), digits=6, algorithm="sha1")
    )
    counter_suite = OcraSuite.parse("OCRA-1:HOTP-SHA512-8:C-QN08")
    assert _ascending(
        plan_ocra(suite=counter_suite, challenge="12345678", counter=3, window=window, now=0)
    )
    time_suite = OcraSuite.parse("OCRA-1:HOTP-SHA512-8:QN08-T1M")
    assert _ascending(
        plan_ocra(suite=time_suite, challenge="12345678", window=min(window, 10), now=1_206_446_760)
    )


def test_code_checks() -> None:
    plan = plan_hotp(counter=0, window=0, digits=6, algorithm="sha1")
    with pytest.raises(OtpInputError, match="otp"):
        check_code(plan, "12345")
    with pytest.raises(OtpInputError, match="otp"):
        check_code(plan, "１２３４５６")
    # RFC 4226 Appendix D, count 0: the HMAC whose truncation is 755224.
    mac = bytes.fromhex("cc93cf18508d94934c64b65d8ba7667fb7cde4b0")
    assert is_code(plan, mac, check_code(plan, "755224"))
    assert not is_code(plan, mac, check_code(plan, "755225"))
