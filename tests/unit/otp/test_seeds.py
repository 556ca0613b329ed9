"""The ``encrypted_seed`` blob layout: what goes in comes out, and no byte string whatever
makes parsing fail with anything but "does not authenticate" (a forged blob is a 400, never
a 500)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.errors import InvalidCiphertext
from vault.otp import seeds

PARAMS = [
    seeds.TokenParams("totp", "sha1", 6, 30),
    seeds.TokenParams("hotp", "sha512", 10),
    seeds.TokenParams("ocra", "sha256", 8, None, "OCRA-1:HOTP-SHA256-8:QN08"),
]


@pytest.mark.parametrize("params", PARAMS)
def test_a_blob_round_trips(params: seeds.TokenParams) -> None:
    seed_id, binding, wrapped, tag = os.urandom(16), os.urandom(32), os.urandom(40), os.urandom(32)
    signed = seeds.body(seed_id, binding, params, wrapped)
    blob = seeds.parse(seeds.assemble(7, signed, tag))
    assert (blob.version, blob.seed_id, blob.binding, blob.params) == (7, seed_id, binding, params)
    assert (blob.wrapped, blob.tag, blob.signed, blob.format) == (
        wrapped,
        tag,
        signed,
        seeds.FORMAT_KEYED,
    )
    assert blob.keyed


def test_the_binding_covers_every_byte_but_the_tag_and_the_identifiers() -> None:
    params = PARAMS[0]
    seed_id, wrapped = os.urandom(16), os.urandom(24)
    blob = seeds.parse(
        seeds.assemble(3, seeds.body(seed_id, os.urandom(32), params, wrapped), bytes(32))
    )
    assert blob.unbound == seeds.unbound(seed_id, params, wrapped)
    message = blob.binding_input("otp-seeds", "a", "b", "c")
    assert blob.unbound in message
    others = [
        blob.binding_input("otp-seeds", "ab", "", "c"),  # identifiers are length-prefixed
        blob.binding_input("otp-seeds", "a", "b", "c "),
        blob.binding_input("other-key", "a", "b", "c"),
        seeds.binding_message("otp-seeds", 4, blob.unbound, "a", "b", "c"),
        seeds.binding_message(
            "otp-seeds", 3, seeds.unbound(seed_id, PARAMS[1], wrapped), "a", "b", "c"
        ),
    ]
    assert message not in others
    assert len(set(others)) == len(others)


@given(st.binary(max_size=600), st.integers(min_value=1, max_value=2**31))
def test_any_bytes_parse_or_do_not_authenticate(raw: bytes, version: int) -> None:
    text = seeds.assemble(version, raw, b"")
    try:
        blob = seeds.parse(text)
    except InvalidCiphertext:
        return
    assert blob.params.kind in ("hotp", "totp", "ocra")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=5)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["k", "a", "d", "p", "s"]),
        _JSON | st.sampled_from(["hotp", "totp", "ocra", "sha1", "sha256"]) | st.integers(0, 400),
    )
)
def test_any_parameters_decode_to_plausible_ones_or_do_not_authenticate(fields: dict) -> None:  # type: ignore[type-arg]
    raw = json.dumps(fields, allow_nan=True).encode()
    try:
        params = seeds.TokenParams.decode(raw)
    except InvalidCiphertext:
        return
    assert params.kind in ("hotp", "totp", "ocra")
    assert params.algorithm in ("sha1", "sha256", "sha512")
    assert isinstance(params.digits, int)
    assert 4 <= params.digits <= 10
