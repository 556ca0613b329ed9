"""``/v1/sys/health`` answers 503 unless an HSM call and a database query both work now."""

from __future__ import annotations

import gc
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app, create_default_app
from hsm.errors import HsmUnavailable
from tests.unit.fake_hsm import FakeHsm
from vault.config import load_settings
from vault.hsm import Hsm
from vault.store import Database


class _DownHsm(FakeHsm):
    async def run(self, job: Any, *, calls: int = 1) -> Any:
        raise HsmUnavailable()

    def run_now(self, job: Any, *, calls: int = 1) -> tuple[bool, Any]:
        raise HsmUnavailable()


def _client(hsm: Any, database_url: str) -> TestClient[Any]:
    vault = SimpleNamespace(
        hsm=Hsm(hsm), db=Database.open(database_url), close=lambda: None, background=list
    )
    return TestClient(create_app(load_settings(), lambda _: vault))  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("hsm", "url", "status", "hsm_state", "db_state"),
    [
        (FakeHsm(), "sqlite://", 200, "ok", "ok"),
        (_DownHsm(), "sqlite://", 503, "unavailable", "ok"),
        (FakeHsm(), "sqlite:////nonexistent-dir/x.db", 503, "ok", "unavailable"),
    ],
)
def test_health(hsm: Any, url: str, status: int, hsm_state: str, db_state: str) -> None:
    with _client(hsm, url) as client:
        r = client.get("/v1/sys/health")
        head = client.head("/v1/sys/health")
    assert r.status_code == status
    body = r.json()
    assert body["initialized"] is True
    assert body["sealed"] is (hsm_state != "ok")
    assert (body["hsm"], body["database"]) == (hsm_state, db_state)
    # Load balancers probe with HEAD: the same status, no body.
    assert head.status_code == status
    assert head.content == b""


def test_liveness_needs_neither_the_hsm_nor_the_database() -> None:
    with _client(_DownHsm(), "sqlite:////nonexistent-dir/x.db") as client:
        live = client.get("/v1/sys/live")
        head = client.head("/v1/sys/live")
        health = client.get("/v1/sys/health")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (head.status_code, head.content) == (200, b"")
    assert health.status_code == 503


def test_a_failing_server_hook_never_stops_a_worker_from_serving() -> None:
    def broken() -> None:
        raise OSError("the run dir is not writable")

    vault = SimpleNamespace(
        hsm=Hsm(FakeHsm()), db=Database.open("sqlite://"), close=lambda: None, background=list
    )
    app = create_app(load_settings(), lambda _: vault, on_startup=[broken], on_shutdown=[broken])  # type: ignore[arg-type, return-value]
    with TestClient(app) as client:  # type: ignore[arg-type]
        assert client.get("/v1/sys/live").status_code == 200


def test_a_served_worker_keeps_what_it_built_out_of_the_collectors_way() -> None:
    """The server's app freezes, as its last start-up step, what the worker has built: a
    full collection under load scans only what requests make (unfrozen, one stopped a
    worker for 70-100 ms)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    gc.unfreeze()
    app = create_default_app()  # it sets up the worker's JSON logs: put back after
    try:
        assert gc.get_freeze_count() == 0
        with TestClient(app) as client:  # type: ignore[arg-type]
            assert gc.get_freeze_count() > 1000
            assert client.get("/v1/sys/live").status_code == 200
    finally:
        gc.unfreeze()
        root.handlers[:] = handlers
        root.setLevel(level)
