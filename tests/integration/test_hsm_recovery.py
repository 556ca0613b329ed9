"""The HSM session goes away mid-service: a 503 (never a wrong answer), then recovery
without a restart."""

from __future__ import annotations

import asyncio

import pytest

from vault.envelope import EncryptItem
from vault.errors import HsmUnavailable
from vault.transit import DecryptItem

pytestmark = pytest.mark.hsm


def test_a_lost_session_is_a_503_then_recovers(runtime) -> None:  # type: ignore[no-untyped-def]
    [sealed] = asyncio.run(runtime.transit.encrypt("backup-share", [EncryptItem(b"before", b"ad")]))

    def lose_session(ops):  # type: ignore[no-untyped-def]
        ops.session.close()  # C_CloseSession on the session that logged in: the process logs out

    runtime.hsm.run_sync(lose_session)
    with pytest.raises(HsmUnavailable):
        asyncio.run(
            runtime.transit.decrypt("backup-share", [DecryptItem(sealed.ciphertext, b"ad")])
        )
    assert runtime.hsm.healthy() is False
    # The next request opens a new session, logs in again and finds the keys afresh.
    [plain] = asyncio.run(
        runtime.transit.decrypt("backup-share", [DecryptItem(sealed.ciphertext, b"ad")])
    )
    assert plain == b"before"
    assert runtime.hsm.healthy() is True
