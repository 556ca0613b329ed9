"""Transit's keyless hash: Vault's algorithms, formats, order of checks and messages
(OpenBao 2.7.2's answers, /tmp/bao-report.md Q5, recorded in docs/transit-reference.md), and
the Go base64 decoder behind its input."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.encoding import go_b64decode
from vault.errors import BadRequest
from vault.hashing import ALGORITHMS, hash_sum

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "transit-hash-openbao.json").read_text()
)
OPENBAO_SUMS: dict[str, str] = VECTORS["hex_sums"]
HELLO = VECTORS["input"]  # "hello world"
BAD_B64 = "unable to decode input as base64: illegal base64 data at input byte 0"


@pytest.mark.parametrize("algorithm", sorted(OPENBAO_SUMS))
def test_sums_match_openbao(algorithm: str) -> None:
    assert hash_sum(HELLO, algorithm, None) == OPENBAO_SUMS[algorithm]
    assert (
        hash_sum(HELLO, algorithm, "base64")
        == base64.b64encode(bytes.fromhex(OPENBAO_SUMS[algorithm])).decode()
    )
    assert set(ALGORITHMS) == set(OPENBAO_SUMS)


def test_defaults_and_empty_input() -> None:
    assert hash_sum(HELLO, None, None) == OPENBAO_SUMS["sha2-256"]
    assert hash_sum(HELLO, None, "hex") == OPENBAO_SUMS["sha2-256"]
    assert hash_sum(HELLO, None, "base64") == "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
    assert hash_sum("", None, None) == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(
    ("input_b64", "algorithm", "output_format", "message"),
    [
        (None, None, None, "input missing"),
        (None, "md5", "bin", "input missing"),  # input is checked first
        (
            "!!",
            "md5",
            "bin",
            "unable to decode input as base64: illegal base64 data at input byte 0",
        ),
        (
            "-_8=",
            None,
            None,
            "unable to decode input as base64: illegal base64 data at input byte 0",
        ),
        (
            "aGk",
            None,
            None,
            "unable to decode input as base64: illegal base64 data at input byte 0",
        ),
        (HELLO, "md5", "bin", 'unsupported encoding format bin; must be "hex" or "base64"'),
        (HELLO, None, "HEX", 'unsupported encoding format HEX; must be "hex" or "base64"'),
        (HELLO, None, "", 'unsupported encoding format ; must be "hex" or "base64"'),
        (HELLO, "md5", None, "unsupported algorithm md5"),
        (HELLO, "SHA2-256", None, "unsupported algorithm SHA2-256"),  # case-sensitive
        (HELLO, "sha256", None, "unsupported algorithm sha256"),
        (HELLO, "", None, "unsupported algorithm "),
        (HELLO, "sha2-256/extra", None, "unsupported algorithm sha2-256/extra"),
    ],
)
def test_errors_and_their_order_match_openbao(
    input_b64: str | None, algorithm: str | None, output_format: str | None, message: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        hash_sum(input_b64, algorithm, output_format)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("aGk", 0),  # a short final quantum: at its start
        ("aA=", 3),  # "==" due, one given
        ("a===", 1),  # padding after one symbol
        ("aGk=x", 4),  # trailing garbage
        ("aGVsbG8!", 7),
        ("aA==aA==", 4),
        ("é", 0),
    ],
)
def test_go_base64_offsets(text: str, offset: int) -> None:
    with pytest.raises(ValueError, match=f"^illegal base64 data at input byte {offset}$"):
        go_b64decode(text)


def test_go_base64_skips_newlines_like_go() -> None:
    assert go_b64decode("aG\nk=") == b"hi"
    assert go_b64decode("aGk=\r\n") == b"hi"
    assert go_b64decode("aA\n==") == b"h"


@given(st.binary(max_size=200))
def test_go_base64_round_trips_standard_base64(data: bytes) -> None:
    assert go_b64decode(base64.b64encode(data).decode()) == data


@given(st.text(alphabet="ABCab01+/=-_!\n", max_size=24))
def test_go_base64_accepts_no_more_than_python_does(text: str) -> None:
    """Whatever Go's decoder accepts, Python's (newlines removed) decodes alike."""
    try:
        decoded = go_b64decode(text)
    except ValueError:
        return
    cleaned = text.replace("\n", "")
    assert base64.b64decode(cleaned, validate=True) == decoded
