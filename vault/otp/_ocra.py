"""RFC 6287 (OCRA): the OCRASuite grammar (§6) and the DataInput message (§5.1)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from vault.otp._errors import OtpInputError
from vault.otp._hotp import COUNTER_MAX, counter_message

_HASHES = {"SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha512": 64}
_SESSION_LENGTHS = (64, 128, 256, 512)
# §5.1: Q is always 128 bytes, whatever the suite's maximum challenge length.
_QUESTION_BYTES = 128
# Longest well-formed suite is "OCRA-1:HOTP-SHA512-10:C-QA64-PSHA512-S512-T48H" (47 chars).
_MAX_SUITE_LENGTH = 64

_CRYPTO_FUNCTION = re.compile(r"HOTP-(SHA1|SHA256|SHA512)-(0|[4-9]|10)")
_QUESTION = re.compile(r"Q([NAH])([0-9]{2})")
_PASSWORD = re.compile(r"P(SHA1|SHA256|SHA512)")
_SESSION = re.compile(r"S([0-9]{3})")
_TIMESTAMP = re.compile(r"T(0|[1-9][0-9]?)([SMH])")
# §6.3 Table 3: the unit in seconds and the largest count of units per step.
_TIME_UNITS = {"S": (1, 59), "M": (60, 59), "H": (3600, 48)}

_NUMERIC = re.compile(r"[0-9]+")
_ALPHANUMERIC = re.compile(r"[A-Za-z0-9]+")
HEXADECIMAL = re.compile(r"[0-9A-Fa-f]+")


class QuestionFormat(enum.Enum):
    NUMERIC = "N"
    ALPHANUMERIC = "A"
    HEX = "H"


@dataclass(frozen=True, slots=True)
class OcraSuite:
    """A parsed OCRASuite string, ``<Algorithm>:<CryptoFunction>:<DataInput>`` (§6)."""

    text: str
    algorithm: str  # the HMAC hash: "sha1" | "sha256" | "sha512"
    digits: int  # 0 (no truncation) or 4..10
    counter: bool  # DataInput has C
    question_format: QuestionFormat
    question_length: int  # the longest challenge the suite allows, 4..64
    password_algorithm: str | None  # DataInput has P<hash>
    session_length: int | None  # DataInput has S<nnn>: bytes of session information
    time_step: int | None  # DataInput has T<G>: seconds per time step

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> OcraSuite:
        """Parse ``text`` strictly: every rule of §6 is checked, case-sensitively."""
        if not isinstance(text, str) or not text.isascii() or len(text) > _MAX_SUITE_LENGTH:
            raise _suite_error("must be an ASCII OCRASuite string")
        parts = text.split(":")
        if len(parts) != 3:
            raise _suite_error("must be 'OCRA-1:<CryptoFunction>:<DataInput>'")
        version, crypto_function, data_input = parts
        if version != "OCRA-1":
            # §6.1: OCRA-1 is the only version defined.
            raise _suite_error("algorithm must be 'OCRA-1'")
        crypto = _CRYPTO_FUNCTION.fullmatch(crypto_function)
        if crypto is None:
            raise _suite_error(
                "crypto function must be HOTP-SHA1, HOTP-SHA256 or HOTP-SHA512 "
                "followed by -0 or -4..-10 digits"
            )
        counter, question_format, question_length, password, session, step = _parse_data_input(
            data_input
        )
        return cls(
            text=text,
            algorithm=_HASHES[crypto.group(1)],
            digits=int(crypto.group(2)),
            counter=counter,
            question_format=question_format,
            question_length=question_length,
            password_algorithm=password,
            session_length=session,
            time_step=step,
        )


def _parse_data_input(
    data_input: str,
) -> tuple[bool, QuestionFormat, int, str | None, int | None, int | None]:
    # §6.3: DataInput is [C] | QFxx | [PH | Snnn | TG], in that order, each at most once.
    items = data_input.split("-")
    position = 0
    counter = items[0] == "C"
    if counter:
        position += 1
    question = _QUESTION.fullmatch(items[position]) if position < len(items) else None
    if question is None:
        raise _suite_error("DataInput needs a question Q<N|A|H><04..64> after the optional C")
    question_length = int(question.group(2))
    if not 4 <= question_length <= 64:
        raise _suite_error("question length must be between 04 and 64")
    position += 1

    password_algorithm: str | None = None
    if position < len(items) and (match := _PASSWORD.fullmatch(items[position])):
        password_algorithm = _HASHES[match.group(1)]
        position += 1
    session_length: int | None = None
    if position < len(items) and (match := _SESSION.fullmatch(items[position])):
        session_length = int(match.group(1))
        if session_length not in _SESSION_LENGTHS:
            raise _suite_error("session information length must be 064, 128, 256 or 512")
        position += 1
    time_step: int | None = None
    if position < len(items) and (match := _TIMESTAMP.fullmatch(items[position])):
        time_step = _time_step_seconds(int(match.group(1)), match.group(2))
        position += 1
    if position != len(items):
        raise _suite_error(
            "DataInput items must be [C-]Q..[-P..][-S..][-T..], in that order, each once"
        )
    return (
        counter,
        QuestionFormat(question.group(1)),
        question_length,
        password_algorithm,
        session_length,
        time_step,
    )


def _time_step_seconds(count: int, unit: str) -> int:
    seconds, largest = _TIME_UNITS[unit]
    if count == 0 and unit == "H":
        # §6.3 Table 3 writes [0-48]H, but a zero-length step has no time-step count to send;
        # refusing it here beats a division by zero at verification time.
        raise _suite_error("time step T0H has zero length and cannot be used")
    if not 1 <= count <= largest:
        raise _suite_error("time step must be T[1-59]S, T[1-59]M or T[1-48]H")
    return count * seconds


def ocra_message(
    suite: OcraSuite,
    *,
    challenge: str,
    challenge2: str | None = None,
    counter: int | None = None,
    password_hash: bytes | None = None,
    session_info: bytes | None = None,
    timestamp_steps: int | None = None,
) -> bytes:
    """The bytes the HSM MACs for ``suite``: suite ‖ 0x00 ‖ C ‖ Q ‖ P ‖ S ‖ T (§5.1).

    ``challenge2``, if given, is appended to ``challenge`` to form Q: the mutual mode of §7.3
    answers over two challenges (the client's response over QS ‖ QC, the server's over
    QC ‖ QS), and the plain signature over one. Each challenge must fit the suite's length.
    """
    parts = [suite.text.encode("ascii"), b"\x00"]
    if suite.counter:
        if counter is None:
            raise OtpInputError("counter", "required by the suite (C)")
        parts.append(counter_message(counter))
    elif counter is not None:
        raise OtpInputError("counter", "the suite has no counter input (C)")
    parts.append(_question(suite, challenge, challenge2))
    if suite.password_algorithm is not None:
        if password_hash is None:
            raise OtpInputError("password", "required by the suite (P)")
        if len(password_hash) != DIGEST_SIZES[suite.password_algorithm]:
            raise OtpInputError("password_hash", f"must be a {suite.password_algorithm} digest")
        parts.append(password_hash)
    elif password_hash is not None:
        raise OtpInputError("password", "the suite has no password input (P)")
    if suite.session_length is not None:
        if session_info is None:
            raise OtpInputError("session_info", "required by the suite (S)")
        if len(session_info) > suite.session_length:
            raise OtpInputError("session_info", f"longer than {suite.session_length} bytes")
        # Left-padded with zeros, as the RFC's reference implementation (Appendix A) pads it.
        parts.append(session_info.rjust(suite.session_length, b"\x00"))
    elif session_info is not None:
        raise OtpInputError("session_info", "the suite has no session input (S)")
    if suite.time_step is not None:
        if timestamp_steps is None:
            raise OtpInputError("timestamp", "required by the suite (T)")
        if isinstance(timestamp_steps, bool) or not 0 <= timestamp_steps <= COUNTER_MAX:
            raise OtpInputError("timestamp", "must be between 0 and 2^64-1 time steps")
        # §5.1: T is an 8-byte big-endian count of time steps since the Unix epoch.
        parts.append(timestamp_steps.to_bytes(8, "big"))
    elif timestamp_steps is not None:
        raise OtpInputError("timestamp", "the suite has no timestamp input (T)")
    return b"".join(parts)


def _question(suite: OcraSuite, challenge: str, challenge2: str | None) -> bytes:
    challenges = [("challenge", challenge)]
    if challenge2 is not None:
        challenges.append(("challenge2", challenge2))
    for field, value in challenges:
        _check_challenge(suite, field, value)
    question = "".join(value for _, value in challenges)
    if suite.question_format is QuestionFormat.NUMERIC:
        # Appendix B's reference code sends QN as decimal -> BigInteger -> hex digits ...
        hex_digits = format(int(question), "X")
    elif suite.question_format is QuestionFormat.ALPHANUMERIC:
        hex_digits = question.encode("ascii").hex()
    else:
        hex_digits = question
    # ... and every format is right-padded with '0' to 256 hex digits before decoding (Appendix
    # A), so an odd number of hex digits shifts the last nibble high, as the RFC vectors need.
    return bytes.fromhex(hex_digits.ljust(2 * _QUESTION_BYTES, "0"))


def _check_challenge(suite: OcraSuite, field: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise OtpInputError(field, "required by the suite (Q)")
    if len(value) > suite.question_length:
        raise OtpInputError(field, f"longer than the suite's {suite.question_length} characters")
    pattern, kind = {
        QuestionFormat.NUMERIC: (_NUMERIC, "decimal digits"),
        QuestionFormat.ALPHANUMERIC: (_ALPHANUMERIC, "ASCII letters and digits"),
        QuestionFormat.HEX: (HEXADECIMAL, "hexadecimal digits"),
    }[suite.question_format]
    if pattern.fullmatch(value) is None:
        raise OtpInputError(field, f"must be {kind} only")


def _suite_error(message: str) -> OtpInputError:
    return OtpInputError("suite", message)
