"""Two processes on one SoftHSM2 token: a version one process makes is usable by the other.

SoftHSM 2.6 loses sight of objects another process created once this process has written
to the token itself; the HSM layer then reads the token afresh and retries.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from vault.envelope import EncryptItem
from vault.transit import DecryptItem

pytestmark = pytest.mark.hsm


def test_a_version_rotated_by_another_process_is_used_here(runtime) -> None:  # type: ignore[no-untyped-def]
    name = f"mp-{uuid.uuid4().hex[:10]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    exe = shutil.which("hsm-vault", path=str(Path(sys.executable).parent))
    assert exe is not None
    officer = runtime.settings.var_dir / "dev-officers" / "alice.pem"  # who rotates
    subprocess.run(
        [exe, "keys", "rotate", name],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "VAULT_OFFICER_KEY": str(officer)},
    )
    # This process writes to the token after the other one did.
    runtime.registry.create_sync(f"mp-own-{uuid.uuid4().hex[:10]}", "aes256-gcm96")
    runtime.registry.invalidate(name)
    [sealed] = asyncio.run(runtime.transit.encrypt(name, [EncryptItem(b"after rotation", b"")]))
    assert sealed.key_version == 2
    [plain] = asyncio.run(runtime.transit.decrypt(name, [DecryptItem(sealed.ciphertext, b"")]))
    assert plain == b"after rotation"
