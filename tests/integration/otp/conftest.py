"""The OTP API in-process (Litestar's test client, real HTTP semantics, the real SoftHSM2
token and database), with a clock the tests set: the API itself never lets a caller choose
the time."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from tests.conftest import Unclosed, mint


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def client(settings, runtime, clock: Clock) -> Iterator[TestClient[Any]]:  # type: ignore[no-untyped-def]
    # The session's runtime (one HSM login per process), with the vectors' clock.
    app = create_app(settings, lambda _: Unclosed(runtime))
    original = runtime.otp.clock
    runtime.otp.clock = clock
    try:
        with TestClient(app) as c:
            c.headers["X-Vault-Token"] = mint(settings, "token-management")
            yield c
    finally:
        runtime.otp.clock = original


def legacy_binding(token_serial: str, app_id: str, dfp_hash: str) -> bytes:
    """A format-0x02 blob's binding, as the starting code made it: an unkeyed SHA-256 anyone
    can recompute from guessed identifiers (written out here, not taken from the code)."""
    h = hashlib.sha256(b"hsm-vault/otp-binding/v1\x00")
    for value in (token_serial, app_id, dfp_hash):
        h.update(struct.pack(">I", len(value.encode())) + value.encode())
    return h.digest()
