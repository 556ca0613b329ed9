"""HMACs, record digests and blind indexes under HSM-resident ``hmac`` keys."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.digest import (
    RESERVED_PREFIX,
    Digests,
    Field,
    Mac,
    MacCheck,
    encode_blind_index,
    encode_record,
    normalize,
)
from vault.errors import BadRequest, VaultError

pytestmark = pytest.mark.hsm
T = TypeVar("T")
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "record-digest-v1.json"
KEY = "payout-digest"
RECORD: list[Field] = [
    ("payout_id", "po-2026-000042"),
    ("amount", "100.00"),
    ("currency", "EUR"),
    ("iban", "DE89370400440532013000"),
    ("attempt", 1),
    ("urgent", False),
    ("memo", None),
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def value(result: Mac | VaultError) -> str:
    if isinstance(result, VaultError):
        raise result
    return result.value


@pytest.fixture(scope="module")
def digests(runtime) -> Digests:  # type: ignore[no-untyped-def]
    return Digests(runtime.registry, runtime.hsm)


@pytest.fixture(scope="module")
def second_key(runtime) -> str:  # type: ignore[no-untyped-def]
    runtime.registry.create_sync("payout-digest-test-2", "hmac")
    return "payout-digest-test-2"


def digest_of(digests: Digests, fields: Sequence[Field], key: str = KEY) -> str:
    return value(run(digests.record_digests(key, [fields]))[0])


def blind(
    digests: Digests, text: str, normalization: str, context: str = "", key: str = KEY
) -> str:
    return value(run(digests.blind_indexes(key, [(text, normalization, context)]))[0])


# -- Transit HMAC --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [None, "sha2-256"])
def test_hmac_values_and_verification(digests: Digests, algorithm: str | None) -> None:
    mac = value(run(digests.hmac(KEY, [b"message"], algorithm))[0])
    assert mac.startswith("vault:v")
    assert len(base64.b64decode(mac.split(":", 2)[2])) == 32
    assert value(run(digests.hmac(KEY, [b"message"], algorithm))[0]) == mac  # deterministic
    checks = run(
        digests.verify_hmac(KEY, [MacCheck(b"message", mac), MacCheck(b"messagf", mac)], algorithm)
    )
    assert checks == [True, False]
    assert run(digests.verify_hmac(KEY, [MacCheck(b"", mac)], algorithm)) == [False]


@pytest.mark.parametrize(("algorithm", "size"), [("sha2-384", 48), ("sha2-512", 64)])
def test_longer_hmacs(digests: Digests, algorithm: str, size: int) -> None:
    """`hmac` keys are 512-bit secrets, long enough for every SHA-2 HMAC (RFC 2104 §3)."""
    [mac] = run(digests.hmac(KEY, [b"message"], algorithm))
    assert isinstance(mac, Mac)
    text = mac.value
    assert len(base64.b64decode(text.split(":", 2)[2])) == size
    assert run(digests.verify_hmac(KEY, [MacCheck(b"message", text)], algorithm)) == [True]


def test_hmac_errors(digests: Digests) -> None:
    with pytest.raises(BadRequest, match="unsupported algorithm"):
        run(digests.hmac(KEY, [b"m"], "sha2-999"))
    with pytest.raises(BadRequest, match="key version 99 does not exist"):
        run(digests.hmac(KEY, [b"m"], None, 99))
    with pytest.raises(BadRequest, match="key cannot be used for hmac"):
        run(digests.hmac("otp-seeds", [b"m"]))
    (bad,) = run(digests.verify_hmac(KEY, [MacCheck(b"m", "garbage")]))
    assert isinstance(bad, BadRequest)
    assert str(bad) == "invalid HMAC to verify: expected vault:v<version>:<value>"
    (reserved,) = run(digests.hmac(KEY, [RESERVED_PREFIX + b"record-digest/v1\x00"]))
    assert isinstance(reserved, BadRequest)


def test_hmac_rotation_keeps_old_values_verifiable(digests: Digests, runtime) -> None:  # type: ignore[no-untyped-def]
    name = "payout-digest-rotation"
    runtime.registry.create_sync(name, "hmac")
    old = value(run(digests.hmac(name, [b"m"]))[0])
    runtime.registry.rotate_sync(name)
    runtime.registry.invalidate(name)
    new = value(run(digests.hmac(name, [b"m"]))[0])
    assert old.startswith("vault:v1:")
    assert new.startswith("vault:v2:")
    assert old.split(":")[2] != new.split(":")[2]
    assert run(digests.verify_hmac(name, [MacCheck(b"m", old), MacCheck(b"m", new)])) == [
        True,
        True,
    ]
    assert value(run(digests.hmac(name, [b"m"], None, 1))[0]) == old


# -- record digests ------------------------------------------------------------------------


def test_encoding_matches_the_vectors() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    for case in vectors["records"]:
        fields = [(name, val) for name, val in case["fields"]]
        assert encode_record(fields).hex() == case["encoding_hex"], case["comment"]
    for case in vectors["blind_indexes"]:
        encoded = encode_blind_index(case["value"], case["normalization"], case["context"])
        assert encoded.hex() == case["encoding_hex"]


def test_record_digest_round_trip(digests: Digests) -> None:
    digest = digest_of(digests, RECORD)
    assert digest == digest_of(digests, list(RECORD))
    tampered = [*RECORD[:1], ("amount", "1000.00"), *RECORD[2:]]
    results = run(digests.verify_record_digests(KEY, [(RECORD, digest), (tampered, digest)]))
    assert results == [True, False]


def test_every_field_change_and_every_swap_changes_the_digest(digests: Digests) -> None:
    base = digest_of(digests, RECORD)
    variants: list[list[Field]] = []
    for i, (name, val) in enumerate(RECORD):
        changed = "x" if val != "x" else "y"
        variants.append([*RECORD[:i], (name, changed), *RECORD[i + 1 :]])
        variants.append([*RECORD[:i], (name + "_", val), *RECORD[i + 1 :]])
        for j in range(i + 1, len(RECORD)):
            swapped = list(RECORD)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            variants.append(swapped)
    variants.append(RECORD[:-1])
    results = run(digests.record_digests(KEY, variants))
    values = [value(r) for r in results]
    assert base not in values
    assert len(set(values)) == len(values)


def test_types_are_part_of_the_value(digests: Digests) -> None:
    spellings: list[list[Field]] = [
        [("n", 1)],
        [("n", "1")],
        [("n", True)],
        [("n", None)],
        [("n", "")],
        [("n", False)],
        [("n", 0)],
        [("n", "0")],
    ]
    values = [value(r) for r in run(digests.record_digests(KEY, spellings))]
    assert len(set(values)) == len(values)


def test_record_rules(digests: Digests) -> None:
    for bad in ([], [("a", "1"), ("a", "2")], [("", "x")]):
        (result,) = run(digests.record_digests(KEY, [bad]))
        assert isinstance(result, BadRequest)


def test_digests_differ_across_keys(digests: Digests, second_key: str) -> None:
    assert (
        digest_of(digests, RECORD).split(":")[2]
        != digest_of(digests, RECORD, second_key).split(":")[2]
    )


FIELD_VALUES = st.one_of(
    st.text(max_size=12), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none()
)
RECORDS = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), FIELD_VALUES),
    min_size=1,
    max_size=6,
    unique_by=lambda f: f[0],
)


@given(a=RECORDS, b=RECORDS)
@settings(max_examples=500, deadline=None)
def test_the_encoding_is_injective(a: list[Field], b: list[Field]) -> None:
    """Different ordered records never encode alike (so their digests differ unless
    HMAC-SHA-256 collides)."""
    if a != b:
        assert encode_record(a) != encode_record(b)
    else:
        assert encode_record(a) == encode_record(b)


@given(record=RECORDS, data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_change_or_reordering_changes_the_hsm_digest(
    digests: Digests, record: list[Field], data: st.DataObject
) -> None:
    changed = list(record)
    if len(record) > 1 and data.draw(st.booleans(), label="swap"):
        i = data.draw(st.integers(0, len(record) - 2), label="i")
        changed[i], changed[i + 1] = changed[i + 1], changed[i]
    else:
        i = data.draw(st.integers(0, len(record) - 1), label="i")
        new_value = data.draw(FIELD_VALUES.filter(lambda v: v != record[i][1]), label="value")
        changed[i] = (record[i][0], new_value)
    if changed == record:  # swapping two equal pairs cannot happen: names are unique
        return
    first, second = run(digests.record_digests(KEY, [record, changed]))
    assert value(first) != value(second)


# -- blind indexes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalization", "spellings"),
    [
        (
            "pan",
            [
                "4111111111111111",
                "4111 1111 1111 1111",
                "4111-1111-1111-1111",
                "４１１１ １１１１ １１１１ １１１１",
            ],
        ),
        ("email", ["alice@example.com", "Alice@Example.COM", "  ALICE@EXAMPLE.COM "]),
        ("text", ["Müller GmbH", "  MÜLLER   gmbh ", "Ｍüller GmbH", "Mu\u0308ller GmbH"]),
    ],
)
def test_blind_index_is_stable_under_normalization(
    digests: Digests, normalization: str, spellings: list[str]
) -> None:
    values = {blind(digests, s, normalization, "column") for s in spellings}
    assert len(values) == 1


def test_blind_index_separates_keys_contexts_normalizations_and_other_macs(
    digests: Digests, second_key: str
) -> None:
    text = "alice@example.com"
    base = blind(digests, text, "email", "customers.email")
    bodies = {
        base.split(":")[2],
        blind(digests, text, "email", "customers.email", second_key).split(":")[2],
        blind(digests, text, "email", "payees.email").split(":")[2],
        blind(digests, text, "text", "customers.email").split(":")[2],
        blind(digests, text, "exact", "customers.email").split(":")[2],
        value(run(digests.hmac(KEY, [text.encode()]))[0]).split(":")[2],
        digest_of(digests, [("email", text)]).split(":")[2],
    }
    assert len(bodies) == 7


def test_blind_index_rejects_what_does_not_normalize(digests: Digests) -> None:
    for text, normalization in (
        ("4111 1111 1111 111x", "pan"),
        ("12345", "pan"),
        ("not-an-address", "email"),
        ("x", "nope"),
    ):
        (result,) = run(digests.blind_indexes(KEY, [(text, normalization, "")]))
        assert isinstance(result, BadRequest), (text, normalization)


def test_normalizations() -> None:
    assert normalize("4111-1111 1111\t1111", "pan") == "4111111111111111"
    assert normalize(" Alice@Example.COM ", "email") == "alice@example.com"
    assert normalize("Straße  ﬁx", "text") == "strasse fix"
    assert normalize(" As Is ", "exact") == " As Is "
