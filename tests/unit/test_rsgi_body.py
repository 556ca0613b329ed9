"""The gate's RSGI body reader (what ``hsm-vault serve`` runs; the end-to-end tests drive it
through granian): a declared length over the limit is refused before a byte is read, a chunked
body as soon as it passes the limit, and a connection closed under it is the client gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from granian._granian import RSGIProtocolClosed

from api.errors import BodyTooLarge
from api.gate import _RsgiBody


class FakeProto:
    def __init__(self, chunks: list[bytes], *, closes: bool = False) -> None:
        self.chunks = chunks
        self.closes = closes
        self.read = 0  # chunks handed out

    async def __call__(self) -> bytes:
        self.read = len(self.chunks)
        return b"".join(self.chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk
        if self.closes:
            raise RSGIProtocolClosed()


def read(proto: FakeProto, length: str | None, limit: int) -> bytes:
    return asyncio.run(_RsgiBody(proto, length).read(limit))


def test_a_declared_length_within_the_limit_is_read_whole() -> None:
    proto = FakeProto([b'{"plaintext":', b'""}'])
    assert read(proto, "16", 16) == b'{"plaintext":""}'


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    proto = FakeProto([b"x" * 64])
    with pytest.raises(BodyTooLarge):
        read(proto, "64", 63)
    assert proto.read == 0


def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    proto = FakeProto([b"x" * 10, b"x" * 10, b"x" * 10, b"x" * 10])
    with pytest.raises(BodyTooLarge):
        read(proto, None, 25)
    assert proto.read == 3  # the fourth chunk was never asked for


def test_a_chunked_body_within_the_limit_is_joined() -> None:
    assert read(FakeProto([b"ab", b"", b"cd"]), None, 4) == b"abcd"


def test_a_length_that_is_not_a_number_is_read_as_chunks() -> None:
    with pytest.raises(BodyTooLarge):
        read(FakeProto([b"x" * 8]), "-1", 4)


def test_a_connection_closed_mid_body_is_the_client_gone() -> None:
    with pytest.raises(ConnectionAbortedError):
        read(FakeProto([b"x"], closes=True), None, 100)
