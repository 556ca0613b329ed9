"""HOTP (RFC 4226) and TOTP (RFC 6238) through plan -> (fake) HSM -> match."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import pyotp
import pytest
from otp_support import host_macs, load_vectors

from vault.otp import (
    OtpInputError,
    counter_message,
    match,
    plan_hotp,
    plan_totp,
    time_step,
    truncate,
)

RFC4226 = load_vectors("rfc4226.json")
RFC6238 = load_vectors("rfc6238.json")
# A fixed seed keeps the "no accidental collision" assertions below deterministic.
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.mark.parametrize("vector", RFC4226["vectors"], ids=lambda v: f"counter{v['counter']}")
def test_rfc4226_intermediate_values(vector: dict[str, Any]) -> None:
    secret = bytes.fromhex(RFC4226["secret_hex"])
    mac = hmac.new(secret, counter_message(vector["counter"]), "sha1").digest()
    assert mac.hex() == vector["hmac_hex"]
    assert truncate(mac, 6) == vector["hotp"]
    # At 10 digits the code is the whole 31-bit truncated value, zero-padded.
    assert truncate(mac, 10) == str(vector["truncated_decimal"]).zfill(10)


@pytest.mark.parametrize("vector", RFC4226["vectors"], ids=lambda v: f"counter{v['counter']}")
def test_rfc4226_plan_and_match(vector: dict[str, Any]) -> None:
    secret = bytes.fromhex(RFC4226["secret_hex"])
    plan = plan_hotp(counter=vector["counter"], window=0, digits=6, algorithm="sha1")
    found = match(plan, host_macs(secret, plan), vector["hotp"])
    assert found is not None
    assert found.position == vector["counter"]


def test_rfc4226_look_ahead_window() -> None:
    secret = bytes.fromhex(RFC4226["secret_hex"])
    codes = [v["hotp"] for v in RFC4226["vectors"]]
    plan = plan_hotp(counter=3, window=4, digits=6, algorithm="sha1")
    assert [c.position for c in plan.candidates] == [3, 4, 5, 6, 7]
    macs = host_macs(secret, plan)
    for counter in range(3, 8):
        found = match(plan, macs, codes[counter])
        assert found is not None
        assert found.position == counter
    # Behind the counter (already used) and past the look-ahead window: rejected.
    for counter in (0, 1, 2, 8, 9):
        assert match(plan, macs, codes[counter]) is None


@pytest.mark.parametrize(
    "vector", RFC6238["vectors"], ids=lambda v: f"{v['algorithm']}-{v['time']}"
)
def test_rfc6238_plan_and_match(vector: dict[str, Any]) -> None:
    algorithm = vector["algorithm"]
    secret = bytes.fromhex(RFC6238["secrets_hex"][algorithm])
    assert time_step(vector["time"], RFC6238["period"]) == int(vector["step_hex"], 16)
    plan = plan_totp(
        now=vector["time"],
        period=RFC6238["period"],
        window=0,
        digits=RFC6238["digits"],
        algorithm=algorithm,
    )
    assert plan.algorithm == algorithm
    found = match(plan, host_macs(secret, plan), vector["totp"])
    assert found is not None
    assert found.position == int(vector["step_hex"], 16)


def test_rfc6238_uses_distinct_seeds_per_hash() -> None:
    lengths = {alg: len(bytes.fromhex(h)) for alg, h in RFC6238["secrets_hex"].items()}
    assert lengths == {"sha1": 20, "sha256": 32, "sha512": 64}


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [("sha1", hashlib.sha1), ("sha256", hashlib.sha256), ("sha512", hashlib.sha512)],
)
@pytest.mark.parametrize("digits", [6, 8])
def test_pyotp_totp_codes_verify_within_window_only(
    algorithm: str, digest: object, digits: int
) -> None:
    secret = pyotp.TOTP(SEED).byte_secret()
    token = pyotp.TOTP(SEED, digits=digits, digest=digest, interval=30)
    now = 1_700_000_015.0
    plan = plan_totp(now=now, period=30, window=1, digits=digits, algorithm=algorithm)
    macs = host_macs(secret, plan)
    step = time_step(now, 30)
    for offset in (-1, 0, 1):
        found = match(plan, macs, token.at(now + 30 * offset))
        assert found is not None
        assert found.position == step + offset
    for offset in (-3, -2, 2, 3):  # too early / too late for a window of one step
        code = token.at(now + 30 * offset)
        assert code not in {token.at(now + 30 * o) for o in (-1, 0, 1)}
        assert match(plan, macs, code) is None


def test_pyotp_hotp_codes_verify() -> None:
    secret = pyotp.HOTP(SEED).byte_secret()
    token = pyotp.HOTP(SEED, digits=6)
    plan = plan_hotp(counter=100, window=10, digits=6, algorithm="sha1")
    macs = host_macs(secret, plan)
    for counter in range(100, 111):
        found = match(plan, macs, token.at(counter))
        assert found is not None
        assert found.position == counter


def test_wrong_code_is_rejected() -> None:
    secret = secrets.token_bytes(20)
    plan = plan_totp(now=1_700_000_000, period=30, window=0, digits=6, algorithm="sha1")
    macs = host_macs(secret, plan)
    right = truncate(macs[0], 6)
    wrong = str((int(right) + 1) % 10**6).zfill(6)
    assert match(plan, macs, wrong) is None


def test_totp_steps_before_t0_are_left_out() -> None:
    plan = plan_totp(now=30, period=30, window=2, digits=6, algorithm="sha1")
    assert [c.position for c in plan.candidates] == [0, 1, 2, 3]
    assert (
        plan_totp(now=130, period=30, window=0, digits=6, algorithm="sha1", t0=100)
        .candidates[0]
        .position
        == 1
    )


def test_time_step_handles_far_future_exactly() -> None:
    assert time_step(20_000_000_000, 30) == 0x27BC86AA
    assert time_step(59.999, 30) == 1


def test_algorithm_names_are_normalised() -> None:
    assert plan_hotp(counter=0, window=0, digits=6, algorithm="SHA256").algorithm == "sha256"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"digits": 5}, "digits"),
        ({"digits": 11}, "digits"),
        ({"window": 101}, "window"),
        ({"window": -1}, "window"),
        ({"algorithm": "md5"}, "algorithm"),
        ({"counter": -1}, "counter"),
        ({"counter": 2**64}, "counter"),
    ],
)
def test_plan_hotp_rejects_bad_input(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"counter": 0, "window": 0, "digits": 6, "algorithm": "sha1"}
    args.update(kwargs)
    with pytest.raises(OtpInputError) as caught:
        plan_hotp(**args)
    assert caught.value.field == field
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"digits": 4}, "digits"),
        ({"window": 11}, "window"),
        ({"period": 0}, "period"),
        ({"period": 301}, "period"),
        ({"now": float("nan")}, "time"),
        ({"now": float("inf")}, "time"),
        ({"now": 10.0, "t0": 100}, "time"),
        ({"t0": -1}, "t0"),
        ({"algorithm": "sha384"}, "algorithm"),
    ],
)
def test_plan_totp_rejects_bad_input(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {
        "now": 1_700_000_000.0,
        "period": 30,
        "window": 1,
        "digits": 6,
        "algorithm": "sha1",
    }
    args.update(kwargs)
    with pytest.raises(OtpInputError) as caught:
        plan_totp(**args)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_truncate_rejects_digits_out_of_range() -> None:
    mac = bytes(20)
    for digits in (3, 11):
        with pytest.raises(OtpInputError, match="digits"):
            truncate(mac, digits)


def test_truncate_rejects_short_mac_as_internal_error() -> None:
    with pytest.raises(ValueError, match="too short"):
        truncate(bytes(19), 6)
