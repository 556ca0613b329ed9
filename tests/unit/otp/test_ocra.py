"""OCRA (RFC 6287): suite parsing, the DataInput message, and the Appendix C vectors."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from otp_support import host_macs, load_vectors

from vault.otp import (
    OcraSuite,
    OtpInputError,
    QuestionFormat,
    match,
    ocra_message,
    plan_ocra,
    truncate,
)

RFC6287 = load_vectors("rfc6287.json")
VECTORS = RFC6287["vectors"]


def _id(vector: dict[str, Any]) -> str:
    inputs = [vector["challenge"], vector["challenge2"], vector["counter"]]
    return "-".join([vector["suite"], *(str(i) for i in inputs if i is not None)])


def _plan_args(vector: dict[str, Any]) -> dict[str, Any]:
    return {
        "suite": OcraSuite.parse(vector["suite"]),
        "challenge": vector["challenge"],
        "challenge2": vector["challenge2"],
        "counter": vector["counter"],
        "password": vector["password"],
        "now": vector["now"] if vector["now"] is not None else 0.0,
    }


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_appendix_c_message_hmac_truncate(vector: dict[str, Any]) -> None:
    suite = OcraSuite.parse(vector["suite"])
    password_hash = (
        hashlib.sha1(vector["password"].encode()).digest() if vector["password"] else None
    )
    message = ocra_message(
        suite,
        challenge=vector["challenge"],
        challenge2=vector["challenge2"],
        counter=vector["counter"],
        password_hash=password_hash,
        timestamp_steps=vector["timestamp_steps"],
    )
    mac = hmac.new(bytes.fromhex(vector["seed_hex"]), message, suite.algorithm).digest()
    assert truncate(mac, suite.digits) == vector["response"]


@pytest.mark.parametrize("vector", VECTORS, ids=_id)
def test_appendix_c_plan_and_match(vector: dict[str, Any]) -> None:
    plan = plan_ocra(**_plan_args(vector))
    assert len(plan.candidates) == 1
    found = match(plan, host_macs(bytes.fromhex(vector["seed_hex"]), plan), vector["response"])
    assert found is not None
    expected_position = vector["counter"] or vector["timestamp_steps"] or 0
    assert found.position == expected_position


def test_appendix_c_covers_every_suite_and_mode() -> None:
    seen = {(v["section"], v["mode"], v["suite"], v.get("computed_by")) for v in VECTORS}
    assert seen == {
        ("C.1", "one-way", "OCRA-1:HOTP-SHA1-6:QN08", None),
        ("C.1", "one-way", "OCRA-1:HOTP-SHA256-8:C-QN08-PSHA1", None),
        ("C.1", "one-way", "OCRA-1:HOTP-SHA256-8:QN08-PSHA1", None),
        ("C.1", "one-way", "OCRA-1:HOTP-SHA512-8:C-QN08", None),
        ("C.1", "one-way", "OCRA-1:HOTP-SHA512-8:QN08-T1M", None),
        ("C.2", "mutual", "OCRA-1:HOTP-SHA256-8:QA08", "server"),
        ("C.2", "mutual", "OCRA-1:HOTP-SHA256-8:QA08", "client"),
        ("C.2", "mutual", "OCRA-1:HOTP-SHA512-8:QA08", "server"),
        ("C.2", "mutual", "OCRA-1:HOTP-SHA512-8:QA08-PSHA1", "client"),
        ("C.3", "signature", "OCRA-1:HOTP-SHA256-8:QA08", None),
        ("C.3", "signature", "OCRA-1:HOTP-SHA512-8:QA10-T1M", None),
    }
    assert len(VECTORS) == 70


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["mode"] == "mutual"], ids=_id)
def test_mutual_vectors_order_the_challenges_as_section_7_3(vector: dict[str, Any]) -> None:
    # The client answers over QS || QC, the server over QC || QS.
    server, client = vector["server_challenge"], vector["client_challenge"]
    expected = (server, client) if vector["computed_by"] == "client" else (client, server)
    assert (vector["challenge"], vector["challenge2"]) == expected
    assert vector["question"] == vector["challenge"] + vector["challenge2"]


def test_password_hash_may_be_given_instead_of_password() -> None:
    vector = next(v for v in VECTORS if v["password"] is not None)
    args = _plan_args(vector) | {"password": None, "password_hash": RFC6287["password_sha1_hex"]}
    plan = plan_ocra(**args)
    found = match(plan, host_macs(bytes.fromhex(vector["seed_hex"]), plan), vector["response"])
    assert found is not None


def test_counter_suite_looks_ahead() -> None:
    vectors = [v for v in VECTORS if v["suite"] == "OCRA-1:HOTP-SHA512-8:C-QN08"]
    seed = bytes.fromhex(vectors[0]["seed_hex"])
    # Each vector pairs counter i with challenge iiiiiiii: plan for the challenge of counter 5.
    target = vectors[5]
    plan = plan_ocra(**_plan_args(target) | {"counter": 3, "window": 3})
    assert [c.position for c in plan.candidates] == [3, 4, 5, 6]
    found = match(plan, host_macs(seed, plan), target["response"])
    assert found is not None
    assert found.position == 5
    short = plan_ocra(**_plan_args(target) | {"counter": 6, "window": 3})
    assert match(short, host_macs(seed, short), target["response"]) is None


def test_time_suite_accepts_steps_either_side() -> None:
    vector = next(v for v in VECTORS if v["suite"] == "OCRA-1:HOTP-SHA512-8:QN08-T1M")
    seed = bytes.fromhex(vector["seed_hex"])
    for drift_minutes, accepted in ((-2, True), (2, True), (3, False), (-3, False)):
        plan = plan_ocra(
            **_plan_args(vector) | {"now": vector["now"] + 60 * drift_minutes, "window": 2}
        )
        found = match(plan, host_macs(seed, plan), vector["response"])
        assert (found is not None) is accepted
        if found is not None:
            assert found.position == vector["timestamp_steps"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "OCRA-1:HOTP-SHA1-6:QN08",
            ("sha1", 6, False, QuestionFormat.NUMERIC, 8, None, None, None),
        ),
        (
            "OCRA-1:HOTP-SHA256-8:C-QN08-PSHA1",
            ("sha256", 8, True, QuestionFormat.NUMERIC, 8, "sha1", None, None),
        ),
        (
            "OCRA-1:HOTP-SHA512-8:QA10-T1M",
            ("sha512", 8, False, QuestionFormat.ALPHANUMERIC, 10, None, None, 60),
        ),
        (
            "OCRA-1:HOTP-SHA512-10:C-QH64-PSHA512-S512-T48H",
            ("sha512", 10, True, QuestionFormat.HEX, 64, "sha512", 512, 48 * 3600),
        ),
        (
            "OCRA-1:HOTP-SHA1-0:QA04-S064-T59S",
            ("sha1", 0, False, QuestionFormat.ALPHANUMERIC, 4, None, 64, 59),
        ),
        (
            "OCRA-1:HOTP-SHA256-4:QN64-PSHA256-T20M",
            ("sha256", 4, False, QuestionFormat.NUMERIC, 64, "sha256", None, 1200),
        ),
    ],
)
def test_parse_valid_suites(text: str, expected: tuple[Any, ...]) -> None:
    suite = OcraSuite.parse(text)
    assert str(suite) == text
    assert (
        suite.algorithm,
        suite.digits,
        suite.counter,
        suite.question_format,
        suite.question_length,
        suite.password_algorithm,
        suite.session_length,
        suite.time_step,
    ) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "OCRA-1:HOTP-SHA1-6",
        "OCRA-2:HOTP-SHA1-6:QN08",
        "ocra-1:hotp-sha1-6:qn08",
        "OCRA-1:HOTP-MD5-6:QN08",
        "OCRA-1:HOTP-SHA1-3:QN08",
        "OCRA-1:HOTP-SHA1-11:QN08",
        "OCRA-1:HOTP-SHA1-06:QN08",
        "OCRA-1:TOTP-SHA1-6:QN08",
        "OCRA-1:HOTP-SHA1-6:C",
        "OCRA-1:HOTP-SHA1-6:QX08",
        "OCRA-1:HOTP-SHA1-6:QN03",
        "OCRA-1:HOTP-SHA1-6:QN65",
        "OCRA-1:HOTP-SHA1-6:QN8",
        "OCRA-1:HOTP-SHA1-6:QN08-PMD5",
        "OCRA-1:HOTP-SHA1-6:QN08-S065",
        "OCRA-1:HOTP-SHA1-6:QN08-S64",
        "OCRA-1:HOTP-SHA1-6:QN08-T0S",
        "OCRA-1:HOTP-SHA1-6:QN08-T60M",
        "OCRA-1:HOTP-SHA1-6:QN08-T49H",
        "OCRA-1:HOTP-SHA1-6:QN08-T0H",
        "OCRA-1:HOTP-SHA1-6:QN08-T01M",
        "OCRA-1:HOTP-SHA1-6:QN08-T1D",
        "OCRA-1:HOTP-SHA1-6:QN08-T1M-PSHA1",
        "OCRA-1:HOTP-SHA1-6:QN08-PSHA1-PSHA1",
        "OCRA-1:HOTP-SHA1-6:QN08-C",
        "OCRA-1:HOTP-SHA1-6:C-C-QN08",
        "OCRA-1:HOTP-SHA1-6:QN08-",
        "OCRA-1:HOTP-SHA1-6:QN08:extra",
        "OCRA-1:HOTP-SHA1-6:QN٠٨",
        "OCRA-1:HOTP-SHA1-6:QN08" + "-PSHA1" * 10,
    ],
)
def test_parse_rejects_malformed_suites(text: str) -> None:
    with pytest.raises(OtpInputError) as caught:
        OcraSuite.parse(text)
    assert caught.value.field == "suite"
    assert str(caught.value).startswith("invalid suite:")


def test_question_encodings_follow_the_reference_implementation() -> None:
    def question_field(suite_text: str, challenge: str) -> bytes:
        suite = OcraSuite.parse(suite_text)
        message = ocra_message(suite, challenge=challenge)
        start = len(suite_text) + 1
        assert len(message) == start + 128
        return message[start:]

    # QN: decimal -> hex digits -> right-padded with '0' (so an odd digit count shifts a nibble).
    assert question_field("OCRA-1:HOTP-SHA1-6:QN08", "11111111") == bytes.fromhex("a98ac7").ljust(
        128, b"\0"
    )
    assert question_field("OCRA-1:HOTP-SHA1-6:QN08", "1") == b"\x10".ljust(128, b"\0")
    assert question_field("OCRA-1:HOTP-SHA1-6:QN08", "00000000") == bytes(128)
    assert question_field("OCRA-1:HOTP-SHA1-6:QA08", "SIG10000") == b"SIG10000".ljust(128, b"\0")
    assert question_field("OCRA-1:HOTP-SHA1-6:QH08", "abc") == b"\xab\xc0".ljust(128, b"\0")


def test_message_layout_with_every_input() -> None:
    suite = OcraSuite.parse("OCRA-1:HOTP-SHA256-8:C-QA08-PSHA1-S064-T1M")
    pin = hashlib.sha1(b"1234").digest()
    message = ocra_message(
        suite,
        challenge="ABC",
        counter=7,
        password_hash=pin,
        session_info=b"session",
        timestamp_steps=0x132D0B6,
    )
    head = len(suite.text) + 1
    assert message[:head] == suite.text.encode() + b"\0"
    assert message[head : head + 8] == (7).to_bytes(8, "big")
    assert message[head + 8 : head + 136] == b"ABC".ljust(128, b"\0")
    assert message[head + 136 : head + 156] == pin
    assert message[head + 156 : head + 220] == b"session".rjust(64, b"\0")
    assert message[head + 220 :] == (0x132D0B6).to_bytes(8, "big")


SUITE_C_QN = OcraSuite.parse("OCRA-1:HOTP-SHA1-6:C-QN08")
SUITE_QN = OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08")


@pytest.mark.parametrize(
    ("suite", "kwargs", "field"),
    [
        (SUITE_QN, {"challenge": ""}, "challenge"),
        (SUITE_QN, {"challenge": "12a45678"}, "challenge"),
        (SUITE_QN, {"challenge": "1_000"}, "challenge"),
        (SUITE_QN, {"challenge": " 1234"}, "challenge"),
        (SUITE_QN, {"challenge": "١٢٣٤"}, "challenge"),
        (SUITE_QN, {"challenge": "123456789"}, "challenge"),
        (SUITE_QN, {"challenge": "1234", "challenge2": "123456789"}, "challenge2"),
        (SUITE_QN, {"challenge": "1234", "challenge2": ""}, "challenge2"),
        (SUITE_QN, {"challenge": "1234", "counter": 1}, "counter"),
        (SUITE_C_QN, {"challenge": "1234"}, "counter"),
        (SUITE_C_QN, {"challenge": "1234", "counter": -1}, "counter"),
        (SUITE_C_QN, {"challenge": "1234", "counter": 2**64}, "counter"),
        (OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QA08"), {"challenge": "SIG-1000"}, "challenge"),
        (OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QA08"), {"challenge": "SIGé"}, "challenge"),
        (OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QH08"), {"challenge": "0x12"}, "challenge"),
        (OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08-PSHA1"), {"challenge": "1234"}, "password"),
        (SUITE_QN, {"challenge": "1234", "password_hash": bytes(20)}, "password"),
        (
            OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08-PSHA256"),
            {"challenge": "1234", "password_hash": bytes(20)},
            "password_hash",
        ),
        (OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08-S064"), {"challenge": "1234"}, "session_info"),
        (
            OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08-S064"),
            {"challenge": "1234", "session_info": bytes(65)},
            "session_info",
        ),
        (SUITE_QN, {"challenge": "1234", "session_info": b"x"}, "session_info"),
        (OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08-T1M"), {"challenge": "1234"}, "timestamp"),
        (
            OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08-T1M"),
            {"challenge": "1234", "timestamp_steps": -1},
            "timestamp",
        ),
        (SUITE_QN, {"challenge": "1234", "timestamp_steps": 5}, "timestamp"),
    ],
)
def test_message_rejects_malformed_input(
    suite: OcraSuite, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(OtpInputError) as caught:
        ocra_message(suite, **kwargs)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"invalid {field}:")


@pytest.mark.parametrize(
    ("suite_text", "kwargs", "field"),
    [
        ("OCRA-1:HOTP-SHA1-6:QN08", {"password": "1234"}, "password"),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA1", {}, "password"),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA1", {"password": ""}, "password"),
        (
            "OCRA-1:HOTP-SHA1-6:QN08-PSHA1",
            {"password": "1234", "password_hash": "00" * 20},
            "password",
        ),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA1", {"password_hash": "zz" * 20}, "password_hash"),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA1", {"password_hash": "00" * 19}, "password_hash"),
        ("OCRA-1:HOTP-SHA1-6:QN08-PSHA1", {"password_hash": "0 " * 20}, "password_hash"),
        ("OCRA-1:HOTP-SHA1-6:C-QN08", {}, "counter"),
        ("OCRA-1:HOTP-SHA1-6:C-QN08", {"counter": 0, "window": 101}, "window"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T1M", {"window": 11}, "window"),
        ("OCRA-1:HOTP-SHA1-6:QN08-T1M", {"now": float("nan")}, "time"),
        ("OCRA-1:HOTP-SHA1-0:QN08", {}, "suite"),
    ],
)
def test_plan_rejects_malformed_input(suite_text: str, kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"suite": OcraSuite.parse(suite_text), "challenge": "12345678"}
    args |= {"now": 1e9} | kwargs
    with pytest.raises(OtpInputError) as caught:
        plan_ocra(**args)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_errors_never_echo_the_password() -> None:
    with pytest.raises(OtpInputError) as caught:
        plan_ocra(
            suite=OcraSuite.parse("OCRA-1:HOTP-SHA1-6:QN08"),
            challenge="1234",
            password="hunter2-secret",
            now=0,
        )
    assert "hunter2" not in str(caught.value)
