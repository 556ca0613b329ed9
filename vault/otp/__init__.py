"""One-time passwords without seeds on the host: HOTP (RFC 4226), TOTP (RFC 6238), OCRA (RFC 6287).

The HSM computes every HMAC with a seed it never reveals; this package plans the messages to
MAC (``plan_hotp``, ``plan_totp``, ``plan_ocra``) and matches the HSM's MACs to a submitted
code (``match``). Importing PSKC token files (RFC 6030) lives in :mod:`vault.otp.pskc`.
"""

from __future__ import annotations

from vault.otp._errors import OtpBindingMismatch, OtpInputError
from vault.otp._hotp import counter_message, truncate
from vault.otp._ocra import OcraSuite, QuestionFormat, ocra_message
from vault.otp._plan import (
    ALGORITHMS,
    DEFAULT_RESYNC_WINDOW,
    MAX_HOTP_WINDOW,
    MAX_PERIOD,
    MAX_RESYNC_WINDOW,
    MAX_TOTP_WINDOW,
    Candidate,
    OtpKind,
    VerifyPlan,
    check_code,
    is_code,
    match,
    match_consecutive,
    plan_hotp,
    plan_ocra,
    plan_resync,
    plan_totp,
)
from vault.otp._totp import time_step

__all__ = [
    "ALGORITHMS",
    "DEFAULT_RESYNC_WINDOW",
    "MAX_HOTP_WINDOW",
    "MAX_PERIOD",
    "MAX_RESYNC_WINDOW",
    "MAX_TOTP_WINDOW",
    "Candidate",
    "OcraSuite",
    "OtpBindingMismatch",
    "OtpInputError",
    "OtpKind",
    "QuestionFormat",
    "VerifyPlan",
    "check_code",
    "counter_message",
    "is_code",
    "match",
    "match_consecutive",
    "ocra_message",
    "plan_hotp",
    "plan_ocra",
    "plan_resync",
    "plan_totp",
    "time_step",
    "truncate",
]
