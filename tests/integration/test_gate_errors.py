"""An exception nobody expected, raised inside any route's handler, is a JSON 500 for that
request alone: logged once with its request id, counted, and the next request is served."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from api import metrics
from api.app import create_app
from tests.conftest import Unclosed, mint

pytestmark = pytest.mark.hsm


async def _boom(**_: Any) -> None:
    raise RuntimeError("an internal detail that must not leak")


@pytest.fixture
def exploding(settings, runtime) -> Iterator[TestClient[Any]]:  # type: ignore[no-untyped-def]
    gate = create_app(settings, lambda _: Unclosed(runtime))
    handlers = [
        h
        for route in gate.routes.routes
        for h in getattr(route, "route_handlers", ())
        if h.opt.get("route") is not None and not h.opt["route"].public
    ]
    for handler in handlers:
        handler._fn = _boom  # what every handler does now: fail unexpectedly
    with TestClient(gate) as client:
        yield client


def test_an_unexpected_error_is_a_json_500_logged_and_counted(
    exploding: TestClient[Any],
    settings,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    token = mint(settings, "security-officer")
    before = metrics.UNEXPECTED._value.get()
    with caplog.at_level(logging.ERROR, logger="vault.api"):
        r = exploding.get("/v1/transit/keys/backup-share", headers={"X-Vault-Token": token})
    assert r.status_code == 500
    request_id = r.headers["x-request-id"]
    assert r.json() == {"errors": [f"internal error (request {request_id})"]}
    assert "internal detail" not in r.text
    logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    assert metrics.UNEXPECTED._value.get() == before + 1
    # The next request is served as usual.
    assert exploding.get("/v1/sys/live").status_code == 200


def test_every_route_answers_an_unexpected_error_alike(
    exploding: TestClient[Any], settings
) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e.test_gate import all_routes

    cases = all_routes(with_body=True) + all_routes(with_body=False)
    assert len(cases) >= 25
    # Every field some route requires, so that each body decodes and the handler runs.
    body = {
        "token_serial": "T-1",
        "otp": "123456",
        "next_otp": "123456",
        "encrypted_seed": "x",
        "pskc": "x",
        "jwe": "x",
    }
    for method, path, service in cases:
        token = mint(settings, service)
        r = exploding.request(method, path, headers={"X-Vault-Token": token}, json=body)
        assert r.status_code == 500, (method, path, r.status_code, r.text)
        assert r.json()["errors"][0].startswith("internal error (request ")
