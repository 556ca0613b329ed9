"""``truncate`` and ``match``: properties, the tie rule, and the no-early-exit contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import vault.otp._plan as plan_module
from vault.otp import Candidate, OtpInputError, VerifyPlan, match, truncate

macs = st.one_of(st.binary(min_size=20, max_size=20), st.binary(min_size=32, max_size=64))
digit_counts = st.integers(min_value=6, max_value=10)


def _plan(count: int, digits: int) -> VerifyPlan:
    candidates = tuple(Candidate(100 + i, i.to_bytes(8, "big")) for i in range(count))
    return VerifyPlan("sha1", digits, candidates)


@given(mac=macs, digits=st.integers(min_value=4, max_value=10))
def test_truncate_is_rfc4226_dynamic_truncation(mac: bytes, digits: int) -> None:
    code = truncate(mac, digits)
    assert len(code) == digits
    assert code.isascii()
    assert code.isdigit()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    assert int(code) == value % 10**digits


@given(mac_list=st.lists(macs, min_size=1, max_size=8), digits=digit_counts, data=st.data())
def test_match_round_trips_to_the_lowest_matching_position(
    mac_list: list[bytes], digits: int, data: st.DataObject
) -> None:
    plan = _plan(len(mac_list), digits)
    index = data.draw(st.integers(min_value=0, max_value=len(mac_list) - 1))
    code = truncate(mac_list[index], digits)
    found = match(plan, mac_list, code)
    assert found is not None
    first = next(i for i, mac in enumerate(mac_list) if truncate(mac, digits) == code)
    assert found == plan.candidates[first]
    assert found.position <= plan.candidates[index].position


@given(mac_list=st.lists(macs, min_size=1, max_size=8), digits=digit_counts, data=st.data())
def test_match_rejects_codes_no_candidate_produces(
    mac_list: list[bytes], digits: int, data: st.DataObject
) -> None:
    produced = {truncate(mac, digits) for mac in mac_list}
    code = data.draw(
        st.text(alphabet="0123456789", min_size=digits, max_size=digits).filter(
            lambda c: c not in produced
        )
    )
    assert match(_plan(len(mac_list), digits), mac_list, code) is None


def test_ties_go_to_the_lowest_position() -> None:
    mac = bytes(range(20))
    plan = VerifyPlan("sha1", 6, (Candidate(7, b"a"), Candidate(3, b"b"), Candidate(5, b"c")))
    found = match(plan, [mac, mac, mac], truncate(mac, 6))
    assert found == Candidate(3, b"b")


def test_every_candidate_is_truncated_even_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real: Callable[[bytes, int], str] = truncate

    def counting(mac: bytes, digits: int) -> str:
        calls.append(mac)
        return real(mac, digits)

    monkeypatch.setattr(plan_module, "truncate", counting)
    mac_list = [bytes([i]) * 20 for i in range(5)]
    plan = _plan(5, 6)
    assert match(plan, mac_list, real(mac_list[0], 6)) == plan.candidates[0]
    assert calls == mac_list


def test_mac_count_must_fit_the_plan() -> None:
    with pytest.raises(ValueError, match="2 MACs for 3 candidates"):
        match(_plan(3, 6), [bytes(20)] * 2, "123456")


@pytest.mark.parametrize("otp", ["12345", "1234567", "12345a", "١٢٣٤٥٦", " 12345", ""])
def test_malformed_codes_are_a_bad_request(otp: str) -> None:
    with pytest.raises(OtpInputError) as caught:
        match(_plan(1, 6), [bytes(20)], otp)
    assert caught.value.field == "otp"
    assert str(caught.value) == "invalid otp: must be 6 decimal digits"
