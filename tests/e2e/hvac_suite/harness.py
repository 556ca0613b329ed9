"""The harness hvac's own Transit integration tests run in, against a real ``hsm-vault serve``.

Upstream (hvac 2.4.0, tests/utils/hvac_integration_test_case.py) starts a Vault server of its
own, initializes and unseals it, and hands each test a client with the root token. Here the
server is the session's :class:`tests.conftest.Server` and the token is the
``transit-conformance`` dev service's (the conftest sets ``server_url`` and ``token``).

One difference has to be bridged, and only in the client's adapter, never in a test body:
Vault mounts a Transit engine wherever asked and each mount is its own key namespace, while
hsm-vault serves one engine at ``/v1/transit`` and grants keys by name (this service may use
keys named ``conformance-*``). :class:`MountedTransit` therefore turns every mount a test
enables into a key-name prefix of its own (``conformance-<random>-``): requests under the
mount go to ``/v1/transit`` with the key name prefixed, answers come back with the prefix
removed (``name``, and ``keys`` of a listing, which only shows the mount's keys), and
disabling the mount deletes its keys.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from hvac import Client
from hvac.adapters import JSONAdapter

_MOUNT = re.compile(r"^/v1/sys/mounts/(?P<mount>[^/]+)$")
_UNDER_MOUNT = re.compile(r"^/v1/(?P<mount>[^/]+)/(?P<rest>.*)$")
# Transit paths whose next segment names a key (OpenBao 2.7's path patterns).
_NAMED = re.compile(
    r"^(?P<op>keys|encrypt|decrypt|rewrap|sign|verify|hmac|backup|restore"
    r"|datakey/[^/]+|export/[^/]+)/(?P<name>[^/]+)(?P<tail>/.*)?$"
)
KEY_PREFIX = "conformance-"


class MountedTransit(JSONAdapter):
    """hvac's JSON adapter, with Vault's Transit mounts emulated by key-name prefixes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mounts: dict[str, str] = {}

    def request(
        self, method: str, url: str, headers: Any = None, raise_exception: bool = True, **kw: Any
    ) -> Any:
        mount = _MOUNT.fullmatch(url)
        if mount is not None:
            if method.upper() == "DELETE":
                self._drop(self.mounts.pop(mount["mount"], None))
            else:  # enabling: a fresh namespace
                self.mounts[mount["mount"]] = f"{KEY_PREFIX}{uuid.uuid4().hex[:10]}-"
            return None
        under = _UNDER_MOUNT.fullmatch(url)
        prefix = self.mounts.get(under["mount"]) if under is not None else None
        if under is None or prefix is None:
            return super().request(method, url, headers, raise_exception, **kw)
        rest = under["rest"]
        named = _NAMED.fullmatch(rest)
        if named is not None:
            rest = f"{named['op']}/{prefix}{named['name']}{named['tail'] or ''}"
        answer = super().request(method, f"/v1/transit/{rest}", headers, raise_exception, **kw)
        return _unprefixed(answer, prefix)

    def _drop(self, prefix: str | None) -> None:
        """Delete the keys of a mount being disabled (as disabling a Vault mount does)."""
        if prefix is None:
            return
        listed = super().request("LIST", "/v1/transit/keys", raise_exception=False)
        names = listed["data"]["keys"] if isinstance(listed, dict) else []
        for name in (n for n in names if n.startswith(prefix)):
            super().request(
                "POST", f"/v1/transit/keys/{name}/config", json={"deletion_allowed": True}
            )
            super().request("DELETE", f"/v1/transit/keys/{name}")


def _unprefixed(answer: Any, prefix: str) -> Any:
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), dict):
        return answer
    data = answer["data"]
    name = data.get("name")
    if isinstance(name, str) and name.startswith(prefix):
        data["name"] = name[len(prefix) :]
    keys = data.get("keys")
    if isinstance(keys, list):
        data["keys"] = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
    return answer


class HvacIntegrationTestCase:
    """Base class of hvac's integration test cases (upstream's name and interface)."""

    server_url: str = ""
    token: str = ""
    client: Client = None

    def setUp(self) -> None:
        self.client = Client(url=self.server_url, token=self.token, adapter=MountedTransit)

    def tearDown(self) -> None:
        self.client.adapter.close()
