"""Automatic rotation with two server processes on one database: each key is rotated exactly
once per period, by whichever worker holds the lease, and each rotation is one lifecycle
event by the vault."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import Server
from tests.e2e.trust_support import audit_records
from vault import store
from vault.store.tables import key_versions

pytestmark = [pytest.mark.e2e, pytest.mark.hsm]

PERIOD = 2.0
WATCH = 9.0


def test_two_replicas_rotate_exactly_once_per_period(settings: Any, database_url: str) -> None:
    env = {
        "VAULT_DATABASE_URL": database_url,
        # Tests only: a period of seconds instead of Vault's minimum hour, looked at often.
        "VAULT_TEST_MIN_AUTO_ROTATE_PERIOD": "1",
        "VAULT_AUTO_ROTATE_INTERVAL": "0.2",
    }
    replicas = [Server(settings, workers=2, env=env)]
    try:
        replicas.append(Server(settings, workers=1, env=env))
        name = f"conformance-auto-{uuid.uuid4().hex[:8]}"
        with replicas[0].client("transit-conformance") as c:
            r = c.post(f"/v1/transit/keys/{name}", json={"auto_rotate_period": f"{PERIOD:g}s"})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["auto_rotate_period"] == PERIOD
        time.sleep(WATCH)
        with replicas[1].client("transit-conformance") as c:
            info = c.get(f"/v1/transit/keys/{name}").json()["data"]
            # The session's other servers share this database: left on, they would rotate
            # the key every minute for the rest of the run, writing to the token meanwhile.
            off = c.post(f"/v1/transit/keys/{name}/config", json={"auto_rotate_period": 0})
            assert off.status_code in (200, 204), off.text
    finally:
        for replica in replicas:
            replica.stop()
    engine = store.make_engine(database_url)
    try:
        with engine.connect() as conn:
            created = [
                r[0]
                for r in conn.execute(
                    select(key_versions.c.created_at)
                    .where(key_versions.c.key_name == name)
                    .order_by(key_versions.c.version)
                )
            ]
    finally:
        engine.dispose()
    latest = info["latest_version"]
    assert latest == len(created)
    # About WATCH / PERIOD rotations: never two in one period, none skipped.
    assert int(WATCH / PERIOD) - 1 <= latest - 1 <= int(WATCH / PERIOD)
    gaps = [b - a for a, b in itertools.pairwise(created)]
    assert all(PERIOD <= gap < PERIOD + 1.5 for gap in gaps), gaps
    rotations = [
        r
        for r in audit_records(database_url)
        if r.get("event") == "key.rotate" and r.get("key") == name
    ]
    # One audit record per rotation, whichever process made it, by the vault itself.
    assert [r["key_version"] for r in rotations] == list(range(2, latest + 1))
    assert {r["actor"] for r in rotations} == {"vault"}
