"""schemathesis against a real server, once per dev service's token: no 5xx, every status
documented for its route, every answer matching its documented schema and content type.

Path parameters name keys each service may use, so the requests reach the vault's logic
(not only the gate's 403)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server, mint

pytestmark = pytest.mark.e2e

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "content_type_conformance",
    )
)
EXAMPLES = 12
SEED = 20261127
SIGN = r"/(sign|verify)/|/jwks$"
MAC = r"/(hmac|digest|blind-index)/"

# service -> (default key, key for sign/verify/jwks, key for hmac/digest/blind-index)
KEYS = {
    "identity-service": ("backup-share", "backup-share", "backup-share"),
    "recovery-service": ("backup-share", "backup-share", "backup-share"),
    "backup-service": ("backup-share", "backup-share", "backup-share"),
    "token-management": ("otp-seeds", "otp-seeds", "otp-seeds"),
    "payout-gateway": ("payout-signing", "payout-signing", "payout-digest"),
    "security-officer": ("officer-fuzz", "officer-fuzz", "officer-fuzz"),
    "transit-conformance": ("conformance-fuzz", "conformance-fuzz-sign", "conformance-fuzz-mac"),
}


def _config(token: str, keys: tuple[str, str, str]) -> str:
    default, sign, mac = keys
    return f"""
headers = {{ "X-Vault-Token" = "{token}" }}
request-timeout = 30.0

[parameters]
"path.name" = "{default}"
"path.kind" = "plaintext"
"path.partner" = "acme-bank"

[[operations]]
include-path-regex = '{SIGN}'
parameters = {{ "path.name" = "{sign}" }}

[[operations]]
include-path-regex = '{MAC}'
parameters = {{ "path.name" = "{mac}" }}
"""


@pytest.fixture(scope="module")
def document(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with server.client("transit-conformance") as c:
        for name, kind in (
            ("conformance-fuzz", "aes256-gcm96"),
            ("conformance-fuzz-sign", "ecdsa-p256"),
            ("conformance-fuzz-mac", "hmac"),
        ):
            assert c.post(f"/v1/transit/keys/{name}", json={"type": kind}).status_code == 200
        r = c.get("/v1/sys/openapi/openapi.json")
    assert r.status_code == 200
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_text(json.dumps(r.json()), encoding="utf-8")
    return path


@pytest.mark.parametrize("service", sorted(KEYS))
def test_schemathesis_finds_nothing(
    server: Server, document: Path, tmp_path: Path, service: str
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(mint(server.settings, service), KEYS[service]), encoding="utf-8")
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe is not None
    run = subprocess.run(
        [
            exe,
            "--config-file",
            str(config),
            "run",
            str(document),
            "--url",
            server.url,
            "--checks",
            CHECKS,
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            str(SEED),
            "--phases",
            "coverage,fuzzing",
            "--generation-database",
            "none",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
