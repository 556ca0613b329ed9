"""Runs hvac 2.4.0's own Transit integration tests (upstream/, vendored unchanged) against
the session's real server: see README.md beside this file for what runs and why some do not.

- ``tests.utils`` and ``tests.utils.hvac_integration_test_case``, which the upstream module
  imports, are our vendored subset of hvac's helpers and our harness (harness.py).
- hvac's version gating runs ``vault -version``: bin/vault answers with the Vault release
  hsm-vault follows (so trim, export, backup and restore are not skipped as "too old").
- Export, backup and restore are refused by design (keys never leave the HSM): those tests
  are expected to fail with the 400 that says so (strict: they must fail that way).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
import hvac.exceptions
import pytest

from tests.conftest import Server, mint
from tests.e2e.hvac_suite import harness
from tests.e2e.hvac_suite.upstream import utils as upstream_utils

HERE = Path(__file__).resolve().parent
sys.modules.setdefault("tests.utils", upstream_utils)
sys.modules.setdefault("tests.utils.hvac_integration_test_case", harness)
os.environ["PATH"] = f"{HERE / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["HSM_VAULT_PYTHON"] = sys.executable

REFUSED_BY_DESIGN = ("test_export_key", "test_backup_key", "test_restore_key")
REFUSED_REASON = (
    "refused by design: keys are never exportable, so hvac's update_key_configuration("
    "exportable=True) / create_key(exportable=True) before the call answer 400"
)
TRIM_PATH = re.compile(r"/v1/transit/keys/\{[^}]+\}/trim")


def _ours(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not _ours(item):
            continue
        item.add_marker(pytest.mark.e2e)
        if item.name.startswith(REFUSED_BY_DESIGN):
            item.add_marker(
                pytest.mark.xfail(
                    raises=hvac.exceptions.InvalidRequest, strict=True, reason=REFUSED_REASON
                )
            )


@pytest.fixture(scope="class", autouse=True)
def _hsm_vault(request: pytest.FixtureRequest, server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    """The harness's server and token: the session's server, the conformance service."""
    if request.cls is not None and issubclass(request.cls, harness.HvacIntegrationTestCase):
        request.cls.server_url = server.url
        request.cls.token = mint(settings, "transit-conformance", lifetime=3600)


@pytest.fixture(scope="session")
def _routes(server: Server, settings) -> set[str]:  # type: ignore[no-untyped-def]
    token = mint(settings, "transit-conformance")
    document = httpx.get(
        f"{server.url}/v1/sys/openapi/openapi.json", headers={"X-Vault-Token": token}, timeout=30
    ).json()
    return set(document["paths"])


@pytest.fixture(autouse=True)
def _trim_when_served(request: pytest.FixtureRequest, _routes: set[str]) -> None:
    if request.node.name.startswith("test_trim_key") and not any(
        TRIM_PATH.fullmatch(p) for p in _routes
    ):
        pytest.skip("this build serves no POST /v1/transit/keys/:name/trim")
