"""Encodings shared by every kind of value the vault hands out: base64, base64url, and the
``vault:v<N>:<value>`` prefix that names the key version (one parser for ciphertexts,
signatures, MACs, digests and OTP seed blobs)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from vault.errors import BadRequest

PREFIX = "vault:v"
# ASCII digits only, no leading zero, at most nine: one spelling per version, and it fits.
_VERSION = re.compile(r"[1-9][0-9]{0,8}")


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def b64decode(value: str, field: str) -> bytes:
    """Standard base64 with padding; anything else names the field that was wrong."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} is not valid base64") from None


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2); padding or any other alphabet is refused."""
    if "=" in text or "+" in text or "/" in text:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class MalformedValue(BadRequest):
    """A value that is not ``vault:v<N>:<value>``."""


@dataclass(frozen=True, slots=True)
class Versioned:
    """A parsed ``vault:v<N>:<body>``; the body is still encoded (base64 or base64url)."""

    version: int
    body: str

    @classmethod
    def parse(cls, text: str, what: str) -> Versioned:
        if text.startswith(PREFIX):
            head, sep, body = text[len(PREFIX) :].partition(":")
            if sep and _VERSION.fullmatch(head) and ":" not in body:
                return cls(int(head), body)
        raise MalformedValue(f"invalid {what}: expected vault:v<version>:<value>")

    def decoded(self, what: str) -> bytes:
        """The body as standard base64."""
        try:
            return base64.b64decode(self.body, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedValue(f"invalid {what}: the value is not valid base64") from None


def versioned(version: int, body: bytes | str) -> str:
    """``vault:v<N>:<body>``, the body base64-encoded unless it is already text."""
    return f"{PREFIX}{version}:{b64encode(body) if isinstance(body, bytes) else body}"
