"""``/v1/sys/health`` answers 503 unless an HSM call and a database query both work now."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import create_engine

from api.app import create_litestar
from tests.unit.fake_hsm import FakeHsm
from vault.config import load_settings
from vault.errors import HsmUnavailable


class _DownHsm(FakeHsm):
    async def run(self, job: Any, *, calls: int = 1) -> Any:
        raise HsmUnavailable()


def _client(hsm: Any, database_url: str) -> TestClient[Any]:
    runtime = SimpleNamespace(hsm=hsm, engine=create_engine(database_url), close=lambda: None)
    app = create_litestar(load_settings(), lambda _: runtime, owns_runtime=False)  # type: ignore[arg-type, return-value]
    return TestClient(app)


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
    assert r.status_code == status
    body = r.json()
    assert body["initialized"] is True
    assert body["sealed"] is (hsm_state != "ok")
    assert (body["hsm"], body["database"]) == (hsm_state, db_state)
