"""Plan the messages the HSM must MAC for one verification, then match its MACs to a code.

Seeds never leave the HSM in plaintext, so this layer computes no HMAC: a ``plan_*`` function
lists every acceptable moving factor (a :class:`Candidate`) with the message to MAC, the
service has the HSM MAC each message with the seed, and :func:`match` finds which, if any,
truncates to the submitted code.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from vault.otp._errors import OtpInputError
from vault.otp._hotp import COUNTER_MAX, MAX_DIGITS, counter_message, truncate
from vault.otp._ocra import DIGEST_SIZES, HEXADECIMAL, OcraSuite, ocra_message
from vault.otp._totp import time_step

ALGORITHMS = ("sha1", "sha256", "sha512")
# RFC 4226 §5.3: at least 6 digits for HOTP (and so TOTP); 10 is where the 31-bit value ends.
MIN_HOTP_DIGITS = 6
# RFC 6238 §5.2 recommends 30 s and allows other steps; beyond 5 minutes a code lives too long.
MAX_PERIOD = 300
# RFC 4226 §7.4 look-ahead (resynchronisation) window, and RFC 6238 §5.2's "at most one time
# step" of network delay, widened to cover drifting clocks.
MAX_HOTP_WINDOW = 100
MAX_TOTP_WINDOW = 10
# RFC 4226 §7.4: resynchronisation looks further ahead than verification ("s" is larger than
# the look-ahead), because two consecutive codes are needed to move the counter.
DEFAULT_RESYNC_WINDOW = 100
MAX_RESYNC_WINDOW = 1000


class OtpKind(enum.Enum):
    HOTP = "hotp"
    TOTP = "totp"
    OCRA = "ocra"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One acceptable moving factor and the message to MAC for it.

    ``position`` is the HOTP counter, the TOTP time step, or, for OCRA, the counter (suites
    with C), the time step (suites with T and no C) or 0 (suites with neither).
    """

    position: int
    message: bytes


@dataclass(frozen=True, slots=True)
class VerifyPlan:
    algorithm: str  # the HSM's HMAC hash: "sha1" | "sha256" | "sha512"
    digits: int
    candidates: tuple[Candidate, ...]


def plan_hotp(*, counter: int, window: int, digits: int, algorithm: str) -> VerifyPlan:
    """Counters ``counter`` .. ``counter + window``: RFC 4226 §7.4 look-ahead, never behind.

    ``counter`` is the next counter the token is expected to use (one past the last accepted).
    """
    algorithm = _check_algorithm(algorithm)
    _check_digits(digits, MIN_HOTP_DIGITS)
    _check_window(window, MAX_HOTP_WINDOW)
    counter_message(counter)  # validates the range before any arithmetic
    last = min(counter + window, COUNTER_MAX)
    candidates = tuple(Candidate(c, counter_message(c)) for c in range(counter, last + 1))
    return VerifyPlan(algorithm, digits, candidates)


def plan_resync(*, counter: int, window: int, digits: int, algorithm: str) -> VerifyPlan:
    """Counters ``counter`` .. ``counter + window + 1``: every pair of consecutive counters
    whose first one is within ``window`` of ``counter`` (RFC 4226 §7.4)."""
    algorithm = _check_algorithm(algorithm)
    _check_digits(digits, MIN_HOTP_DIGITS)
    _check_window(window, MAX_RESYNC_WINDOW)
    counter_message(counter)
    last = min(counter + window + 1, COUNTER_MAX)
    candidates = tuple(Candidate(c, counter_message(c)) for c in range(counter, last + 1))
    return VerifyPlan(algorithm, digits, candidates)


def match_consecutive(
    plan: VerifyPlan, macs: Sequence[bytes], otp: str, next_otp: str
) -> Candidate | None:
    """The lowest candidate whose MAC truncates to ``otp`` while the next one's truncates to
    ``next_otp``; every comparison is made, in constant time."""
    if len(macs) != len(plan.candidates):
        raise ValueError(f"{len(macs)} MACs for {len(plan.candidates)} candidates")
    first, second = check_code(plan, otp), check_code(plan, next_otp)
    found: Candidate | None = None
    for i in range(len(macs) - 1):
        pair = is_code(plan, macs[i], first) & is_code(plan, macs[i + 1], second)
        if pair and found is None:
            found = plan.candidates[i]
    return found


def plan_totp(
    *, now: float, period: int, window: int, digits: int, algorithm: str, t0: int = 0
) -> VerifyPlan:
    """Time steps ``T - window`` .. ``T + window`` around ``now`` (RFC 6238 §5.2).

    ``period`` may be 1..300 seconds; 30 (the RFC 6238 §5.2 default) or 60 are what tokens use.
    Steps before ``t0`` do not exist and are left out.
    """
    algorithm = _check_algorithm(algorithm)
    _check_digits(digits, MIN_HOTP_DIGITS)
    _check_window(window, MAX_TOTP_WINDOW)
    if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= MAX_PERIOD:
        raise OtpInputError("period", f"must be between 1 and {MAX_PERIOD} seconds")
    step = time_step(now, period, t0)
    steps = range(max(step - window, 0), min(step + window, COUNTER_MAX) + 1)
    return VerifyPlan(algorithm, digits, tuple(Candidate(s, counter_message(s)) for s in steps))


def plan_ocra(
    *,
    suite: OcraSuite,
    challenge: str,
    challenge2: str | None = None,
    counter: int | None = None,
    window: int = 0,
    password: str | None = None,
    password_hash: str | None = None,
    session_info: bytes | None = None,
    now: float,
) -> VerifyPlan:
    """Plan the OCRA (RFC 6287) responses to accept for one challenge.

    Suites with C look ahead ``window`` counters from ``counter`` (0..100); suites with T and
    no C accept ``window`` time steps either side of ``now`` (0..10), and a suite with both
    looks ahead on the counter at the current time step only; any other suite has exactly one
    candidate and ignores ``window``. Q is ``challenge`` ‖ ``challenge2``: for the mutual mode
    (§7.3) send the server challenge first to check a client response. The PIN comes either as
    ``password`` (hashed here with the suite's P hash) or as ``password_hash`` (hex).
    """
    if suite.digits == 0:
        # §6.2 lets t=0 mean "no truncation", but gives no text form for a full HMAC response.
        raise OtpInputError("suite", "untruncated (0-digit) responses are not supported")
    pin_hash = _password_hash(suite, password, password_hash)
    timestamp = time_step(now, suite.time_step) if suite.time_step is not None else None

    def message(position_counter: int | None, steps: int | None) -> bytes:
        return ocra_message(
            suite,
            challenge=challenge,
            challenge2=challenge2,
            counter=position_counter,
            password_hash=pin_hash,
            session_info=session_info,
            timestamp_steps=steps,
        )

    if suite.counter:
        _check_window(window, MAX_HOTP_WINDOW)
        if counter is None:
            raise OtpInputError("counter", "required by the suite (C)")
        counter_message(counter)
        counters = range(counter, min(counter + window, COUNTER_MAX) + 1)
        candidates = tuple(Candidate(c, message(c, timestamp)) for c in counters)
    elif timestamp is not None:
        _check_window(window, MAX_TOTP_WINDOW)
        steps = range(max(timestamp - window, 0), timestamp + window + 1)
        candidates = tuple(Candidate(s, message(counter, s)) for s in steps)
    else:
        _check_window(window, MAX_HOTP_WINDOW)
        candidates = (Candidate(0, message(counter, None)),)
    return VerifyPlan(suite.algorithm, suite.digits, candidates)


def match(plan: VerifyPlan, macs: Sequence[bytes], otp: str) -> Candidate | None:
    """The candidate whose MAC truncates to ``otp``, or None.

    ``macs[i]`` is the HSM's HMAC of ``plan.candidates[i].message``. Every candidate is
    truncated and compared with :func:`hmac.compare_digest`, with no early exit, so the time
    taken does not tell which one matched. If several match (a truncation collision), the one
    with the LOWEST position wins: the smallest counter jump for HOTP, the earliest step for
    TOTP, so a replay check on "position > last accepted" stays as strict as it can be.
    A code that is not ``plan.digits`` ASCII digits raises ``OtpInputError("otp", ...)``.
    """
    if len(macs) != len(plan.candidates):
        raise ValueError(f"{len(macs)} MACs for {len(plan.candidates)} candidates")
    submitted = check_code(plan, otp)
    found: Candidate | None = None
    for candidate, mac in zip(plan.candidates, macs, strict=True):
        equal = hmac.compare_digest(truncate(mac, plan.digits).encode("ascii"), submitted)
        if equal and (found is None or candidate.position < found.position):
            found = candidate
    return found


def check_code(plan: VerifyPlan, otp: str) -> bytes:
    """The submitted code as bytes, or ``OtpInputError("otp", ...)`` if it is not
    ``plan.digits`` ASCII digits."""
    if not isinstance(otp, str) or len(otp) != plan.digits or not (otp.isascii() and otp.isdigit()):
        raise OtpInputError("otp", f"must be {plan.digits} decimal digits")
    return otp.encode("ascii")


def is_code(plan: VerifyPlan, mac: bytes, submitted: bytes) -> bool:
    """Whether ``mac`` truncates to the submitted code (a constant-time comparison)."""
    return hmac.compare_digest(truncate(mac, plan.digits).encode("ascii"), submitted)


def _password_hash(
    suite: OcraSuite, password: str | None, password_hash: str | None
) -> bytes | None:
    if suite.password_algorithm is None:
        if password is not None or password_hash is not None:
            raise OtpInputError("password", "the suite has no password input (P)")
        return None
    if password is not None and password_hash is not None:
        raise OtpInputError("password", "give either password or password_hash, not both")
    if password is not None:
        if not isinstance(password, str) or not password:
            raise OtpInputError("password", "must be a non-empty string")
        # §5.1: P is the hash of the PIN; SHA-1 here is the suite's choice, not ours.
        return hashlib.new(suite.password_algorithm, password.encode("utf-8")).digest()
    if password_hash is not None:
        size = DIGEST_SIZES[suite.password_algorithm]
        if not isinstance(password_hash, str) or HEXADECIMAL.fullmatch(password_hash) is None:
            raise OtpInputError("password_hash", "must be hexadecimal")
        if len(password_hash) != 2 * size:
            raise OtpInputError("password_hash", f"must be {2 * size} hexadecimal digits")
        return bytes.fromhex(password_hash)
    raise OtpInputError("password", "required by the suite (P)")


def _check_algorithm(algorithm: str) -> str:
    normalized = algorithm.lower() if isinstance(algorithm, str) else ""
    if normalized not in ALGORITHMS:
        raise OtpInputError("algorithm", "must be sha1, sha256 or sha512")
    return normalized


def _check_digits(digits: int, minimum: int) -> None:
    if isinstance(digits, bool) or not isinstance(digits, int):
        raise OtpInputError("digits", "must be an integer")
    if not minimum <= digits <= MAX_DIGITS:
        raise OtpInputError("digits", f"must be between {minimum} and {MAX_DIGITS}")


def _check_window(window: int, maximum: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or not 0 <= window <= maximum:
        raise OtpInputError("window", f"must be between 0 and {maximum}")
