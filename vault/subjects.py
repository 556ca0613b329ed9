"""Subjects: whom a request is about, read from a key's structured ``associated_data``.

A key may declare (``policies/keys.toml``) that its associated data is structured and which
field names the subject, e.g. the user whose backup share a ciphertext holds::

    [keys.backup-share]
    associated_data = { format = "json", subject = "user_id" }

Two forms are understood, each with exactly one reading so that two requests about the same
subject cannot look like two subjects:

- ``json``: a JSON object in canonical form — keys sorted, no duplicates, no insignificant
  white space, non-ASCII characters as themselves (what ``json.dumps(value, sort_keys=True,
  separators=(",", ":"), ensure_ascii=False)`` writes), e.g. ``{"share":2,"user_id":"u-42"}``;
- ``kv``: ``name=value`` pairs joined by a separator (``;`` unless declared), names unique,
  e.g. ``user_id=u-42;share=2``.

The subject field's value must be a non-empty string (or, in JSON, an integer). Subjects are
never stored or logged as such: the audit trail and the quota counters keep a keyed digest
(HMAC under an HSM key kept for audit alone, ``vault.audit.keys``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

SUBJECT_FORMATS = ("json", "kv")


class _NotCanonical(ValueError):
    pass


_sorted = msgspec.json.Encoder(order="sorted")


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _NotCanonical(name)
        result[name] = value
    return result


@dataclass(frozen=True, slots=True)
class SubjectFormat:
    format: str  # "json" or "kv"
    field: str  # the field that names the subject (e.g. "user_id")
    separator: str = ";"  # between kv pairs

    def subject(self, associated_data: bytes) -> str | None:
        """The subject named in ``associated_data``, or ``None`` when the data is not in
        the declared form or does not name one. (A batch's items usually share their
        associated data: the gate reads each distinct value once, ``api.stages``.)"""
        try:
            text = associated_data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        value = self._json(text) if self.format == "json" else self._kv(text)
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return str(value)
        return value if isinstance(value, str) and value else None

    def _json(self, text: str) -> Any:
        if not text.startswith("{"):  # no canonical object: spare the parser's exception
            return None
        # The common case, twenty times faster: msgspec reads the object and writes it back
        # byte for byte. Its canonical form is json.dumps's but for floats (1e20 vs 1e+20),
        # so a document with a float (or any other difference) takes the defining path below.
        try:
            quick = msgspec.json.decode(text)
            if (
                isinstance(quick, dict)
                and not _has_float(quick)
                and _sorted.encode(quick) == text.encode()
            ):
                return quick.get(self.field)
        except msgspec.DecodeError:
            pass  # json.loads is the judge (it reads NaN, for one)
        try:
            document = json.loads(text, object_pairs_hook=_unique)
        except (ValueError, RecursionError):
            return None
        if not isinstance(document, dict):
            return None
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return document.get(self.field) if canonical == text else None

    def _kv(self, text: str) -> str | None:
        found: dict[str, str] = {}
        for pair in text.split(self.separator):
            name, equals, value = pair.partition("=")
            if not equals or not name or name in found:
                return None
            found[name] = value
        return found.get(self.field)

    def digest_input(self, subject: str) -> bytes:
        """What is MACed for the subject's keyed digest: the field's name and the value."""
        return f"{self.field}\x00{subject}".encode()
