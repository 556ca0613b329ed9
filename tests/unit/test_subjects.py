"""The JSON subject reader's quick path (msgspec) agrees with its definition (json.dumps's
canonical form) on every document, canonical or not."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vault.subjects import SubjectFormat

FORMAT = SubjectFormat("json", "user_id")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate")
    return dict(pairs)


def by_definition(text: str) -> str | None:
    try:
        document = json.loads(text, object_pairs_hook=_unique)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    value = document.get("user_id") if canonical == text else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
documents = st.dictionaries(
    st.sampled_from(["user_id", "pk", "a", "é"]) | st.text(max_size=4), values, max_size=4
)


@settings(max_examples=500)
@given(documents, st.booleans())
def test_documents_read_as_the_definition_says(document: dict[str, Any], canonical: bool) -> None:
    text = json.dumps(
        document, sort_keys=canonical, separators=(",", ":"), ensure_ascii=not canonical
    )
    assert FORMAT.subject(text.encode()) == by_definition(text)


@settings(max_examples=500)
@given(st.text())
def test_any_text_reads_as_the_definition_says(tail: str) -> None:
    text = "{" + tail
    assert FORMAT.subject(text.encode()) == by_definition(text)


def test_the_cases_where_the_quick_path_must_step_aside() -> None:
    assert FORMAT.subject(b'{"user_id":"u-1","x":1e20}') is None  # json.dumps writes 1e+20
    assert FORMAT.subject(b'{"user_id":"u-1","x":1e+20}') == "u-1"
    assert FORMAT.subject(b'{"user_id":"u-1","user_id":"u-1"}') is None  # a duplicate name
    assert FORMAT.subject(b'{"user_id":"u-1","x":NaN}') == "u-1"  # what json.loads reads
    assert FORMAT.subject(b'{"pk":"k","user_id":"u-1"}') == "u-1"
    assert FORMAT.subject(b'{"user_id":"u-1","pk":"k"}') is None  # not sorted
