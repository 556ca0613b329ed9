"""scripts/rotate-key.sh finds ``hsm-vault`` on PATH, as inside the container image (where
there is no .venv beside the scripts), and rotates the key on the token and the database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.hsm


def test_the_script_uses_hsm_vault_from_path(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = f"script-{uuid.uuid4().hex[:10]}"
    runtime.registry.create_sync(name, "aes256-gcm96")
    app = tmp_path / "app"  # laid out as the image's /app: scripts/, and no .venv
    app.mkdir()
    shutil.copytree(ROOT / "scripts", app / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hsm-vault").symlink_to(Path(sys.executable).parent / "hsm-vault")
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    officer = runtime.settings.var_dir / "dev-officers" / "bob.pem"
    if officer.exists():  # where the officers' tool asks who makes the change
        env["VAULT_OFFICER_KEY"] = str(officer)
    done = subprocess.run(
        ["bash", str(app / "scripts" / "rotate-key.sh"), name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    runtime.registry.invalidate(name)
    assert runtime.registry.get_sync(name).latest_version == 2
