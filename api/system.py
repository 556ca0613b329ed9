"""``/v1/sys/...`` and ``/metrics``: health for load balancers, metrics, the API's document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from litestar import Controller, HttpMethod, get, route
from litestar.openapi.datastructures import ResponseSpec
from msgspec import Struct

from api import documents, metrics
from api.call import ANY_SERVICE, HEALTH, PUBLIC, Call, CallParam
from api.responses import Reply, raw
from vault import VAULT_API_VERSION, VERSION

# Both probes run at once, so /v1/sys/health answers within this (load balancers' probe
# timeouts are a few seconds; docs/deploy.md).
PROBE_TIMEOUT = 2.0


class Health(Struct, kw_only=True):
    initialized: bool
    sealed: bool
    standby: bool
    performance_standby: bool
    server_time_utc: int
    version: str
    cluster_name: str
    hsm: str
    database: str


class Live(Struct):
    live: bool


async def _usable(check: Callable[[], Awaitable[object]]) -> bool:
    try:
        await asyncio.wait_for(check(), timeout=PROBE_TIMEOUT)
    except Exception:
        return False
    return True


async def readiness(call: Call) -> tuple[bool, bool]:
    """Whether an HSM call and a database query both work now (probed, never a flag)."""
    vault = call.vault
    hsm_ok, db_ok = await asyncio.gather(
        _usable(lambda: vault.hsm.run(lambda ops: ops.random(1))),
        _usable(lambda: vault.db.run(vault.db.ping)),
    )
    if not db_ok:
        metrics.DATABASE_ERRORS.inc()
    return hsm_ok, db_ok


class SystemController(Controller):
    path = ""

    @route(
        "/v1/sys/health",
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        opt=HEALTH,
        responses={
            200: ResponseSpec(Health, description="Ready", generate_examples=False),
            503: ResponseSpec(Health, description="Not ready", generate_examples=False),
        },
        status_code=200,
    )
    async def health(self, call: CallParam) -> Reply:
        """Vault's health fields; 200 only when the HSM and the database both work now
        (readiness: a load balancer stops routing here otherwise)."""
        hsm_ok, db_ok = await readiness(call)
        body = {
            "initialized": True,
            "sealed": not hsm_ok,
            "standby": False,
            "performance_standby": False,
            "server_time_utc": int(time.time()),
            "version": f"{VAULT_API_VERSION}+hsm-vault.{VERSION}",
            "cluster_name": "hsm-vault",
            "hsm": "ok" if hsm_ok else "unavailable",
            "database": "ok" if db_ok else "unavailable",
        }
        return raw(body, 200 if hsm_ok and db_ok else 503)

    @route(
        "/v1/sys/live",
        http_method=[HttpMethod.GET, HttpMethod.HEAD],
        opt=PUBLIC,
        responses={200: ResponseSpec(Live, description="Alive", generate_examples=False)},
        status_code=200,
    )
    async def live(self, call: CallParam) -> Reply:
        """Liveness: this worker's event loop answers. It touches neither the HSM nor the
        database, so an outage of either never gets a healthy process restarted (restart it
        only when this fails); readiness is ``/v1/sys/health``."""
        return raw({"live": True})

    @get("/metrics", opt=PUBLIC, include_in_schema=False)
    async def metrics(self, call: CallParam) -> Reply:
        return Reply(metrics.exposition(), content_type=metrics.CONTENT_TYPE.encode())

    @get("/v1/sys/openapi/openapi.json", opt=ANY_SERVICE, include_in_schema=False)
    async def openapi(self, call: CallParam) -> Reply:
        return raw(documents.published())
