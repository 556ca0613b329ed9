"""The harness itself: a mount is a key-name prefix, invisible to the test, and disabling it
deletes its keys on the real server."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.conftest import Server, mint
from tests.e2e.hvac_suite.harness import KEY_PREFIX, HvacIntegrationTestCase

pytestmark = pytest.mark.e2e


def test_a_mount_is_a_prefix_the_test_never_sees(server: Server, settings) -> None:  # type: ignore[no-untyped-def]
    case = HvacIntegrationTestCase()
    case.server_url, case.token = server.url, mint(settings, "transit-conformance")
    case.setUp()
    transit = case.client.secrets.transit
    case.client.sys.enable_secrets_engine(backend_type="transit", path="m1")
    case.client.sys.enable_secrets_engine(backend_type="transit", path="m2")
    transit.create_key(name="k", mount_point="m1")
    transit.create_key(name="k", mount_point="m2")
    transit.create_key(name="other", mount_point="m2")
    assert transit.read_key(name="k", mount_point="m1")["data"]["name"] == "k"
    assert transit.list_keys(mount_point="m1")["data"]["keys"] == ["k"]
    assert transit.list_keys(mount_point="m2")["data"]["keys"] == ["k", "other"]
    ct = transit.encrypt_data(name="k", plaintext="aGk=", mount_point="m1")["data"]["ciphertext"]
    assert transit.decrypt_data(name="k", ciphertext=ct, mount_point="m1")["data"]["plaintext"]
    with server.client("transit-conformance") as c:
        names = c.request("LIST", "/v1/transit/keys").json()["data"]["keys"]
        m1 = case.client.adapter.mounts["m1"]
        assert m1.startswith(KEY_PREFIX)
        assert f"{m1}k" in names
        case.client.sys.disable_secrets_engine(path="m1")
        names = c.request("LIST", "/v1/transit/keys").json()["data"]["keys"]
        assert not [n for n in names if n.startswith(m1)]
        assert f"{case.client.adapter.mounts['m2']}other" in names
    case.client.sys.disable_secrets_engine(path="m2")
    case.tearDown()


def test_the_version_shim_says_what_the_server_says(server: Server) -> None:
    """hvac's gating reads `vault -version` (bin/vault); it must name the release the
    server's health reports, and one new enough for trim, export, backup and restore."""
    from packaging.version import Version

    from tests.e2e.hvac_suite.upstream import utils

    health = httpx.get(f"{server.url}/v1/sys/health", timeout=10).json()
    shim = subprocess.run(
        ["vault", "-version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert shim.split()[1] == f"v{health['version']}"
    assert health["version"].startswith("2.7.2+hsm-vault.")
    utils.get_vault_version_string.__dict__.pop("cache", None)
    assert not utils.vault_version_lt("0.11.4")
    assert Version(utils.get_installed_vault_version()) >= Version("2.7.2")
