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
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def b64decode(value: str, field: str) -> bytes:
    """Standard base64 with padding; anything else names the field that was wrong."""
    try:  # what base64.b64decode(value, validate=True) does, without its wrapper
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{field} is not valid base64") from None


_STD_ALPHABET = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_PAD = ord("=")
_NEWLINES = (ord("\n"), ord("\r"))


def go_b64decode(text: str) -> bytes:
    """Standard base64 exactly as Go's ``base64.StdEncoding.DecodeString`` reads it (Vault's
    decoder): padding required, CR and LF skipped, trailing bits ignored. Anything else raises
    ``ValueError`` with Go's message, ``illegal base64 data at input byte <offset>``."""
    src = text.encode("utf-8")
    end = len(src)
    out = bytearray()
    si = 0
    while True:
        quantum: list[int] = []
        while len(quantum) < 4:
            if si == end:
                if not quantum:
                    return bytes(out)
                # StdEncoding pads: a short final quantum is corrupt at its start.
                raise _corrupt(si - len(quantum))
            c = src[si]
            si += 1
            if c in _STD_ALPHABET:
                quantum.append(_STD_ALPHABET[c])
            elif c in _NEWLINES:
                continue
            elif c != _PAD or len(quantum) < 2:
                raise _corrupt(si - 1)
            else:
                si = _after_padding(src, si, len(quantum))
                break
        n = len(quantum)
        value = sum(v << (18 - 6 * i) for i, v in enumerate(quantum))
        out += value.to_bytes(3, "big")[: n - 1 if n < 4 else 3]
        if n < 4:
            return bytes(out)


def _after_padding(src: bytes, si: int, have: int) -> int:
    """Past the ``=`` (one more is due after two symbols); only newlines may follow."""
    end = len(src)
    if have == 2:
        while si < end and src[si] in _NEWLINES:
            si += 1
        if si == end:
            raise _corrupt(end)
        if src[si] != _PAD:
            raise _corrupt(si - 1)
        si += 1
    while si < end and src[si] in _NEWLINES:
        si += 1
    if si < end:
        raise _corrupt(si)  # trailing garbage
    return si


def _corrupt(offset: int) -> ValueError:
    return ValueError(f"illegal base64 data at input byte {offset}")


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
            return binascii.a2b_base64(self.body, strict_mode=True)
        except (binascii.Error, ValueError):
            raise MalformedValue(f"invalid {what}: the value is not valid base64") from None


def versioned(version: int, body: bytes | str) -> str:
    """``vault:v<N>:<body>``, the body base64-encoded unless it is already text."""
    return f"{PREFIX}{version}:{b64encode(body) if isinstance(body, bytes) else body}"
