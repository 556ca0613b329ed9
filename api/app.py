"""The Litestar application: routes, the service gate, error mapping, health and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.fastpath import fast_path
from api.otp import OtpController
from api.payout import PayoutController
from api.responses import ERRORS, encode, error
from api.security import OPENAPI_PATH, PUBLIC, authorize
from api.signing import SigningController
from api.transit import TransitController
from vault.config import Settings, load_settings
from vault.errors import RateLimited, VaultError
from vault.runtime import Runtime

log = logging.getLogger("vault.api")

VERSION = "0.1.0"


def _vault_error(_: Request[Any, Any, Any], exc: VaultError) -> Response[bytes]:
    ERRORS.labels(str(exc.status)).inc()
    if exc.status >= 500:
        log.warning("request failed: %s", type(exc).__name__)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return error(exc.status, str(exc), headers=headers)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    ERRORS.labels(str(status)).inc()
    if isinstance(exc, ValidationException):
        # msgspec names the field and the expected type; it never echoes the value.
        detail = exc.extra if isinstance(exc.extra, list) else []
        reasons = [
            f"{d.get('key', 'body')}: {d.get('message', 'invalid')}"
            for d in detail
            if isinstance(d, dict)
        ]
        return error(400, *(reasons or ["malformed request body"]))
    if isinstance(exc, NotAuthorizedException):
        return error(401, "permission denied")
    if status == 413:
        return error(413, "request body too large")
    return error(status, exc.detail if status < 500 else "internal error")


def _internal_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    ERRORS.labels("500").inc()
    log.error("unhandled %s", type(exc).__name__)
    return error(500, "internal error")


async def _usable(check: Callable[[], Awaitable[object]]) -> bool:
    try:
        await asyncio.wait_for(check(), timeout=2)
    except Exception:
        return False
    return True


@get("/v1/sys/health", opt={PUBLIC: True}, include_in_schema=True)
async def health(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Vault's health fields; 200 only when an HSM call and a database query both work now."""
    rt: Runtime | None = getattr(request.app.state, "runtime", None)
    hsm_ok = db_ok = False
    if rt is not None:

        def query() -> None:
            with rt.engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        hsm_ok = await _usable(lambda: rt.hsm.run(lambda ops: ops.random(1)))
        db_ok = await _usable(lambda: asyncio.to_thread(query))
    body = {
        "initialized": True,
        "sealed": not hsm_ok,
        "standby": False,
        "performance_standby": False,
        "server_time_utc": int(time.time()),
        "version": VERSION,
        "cluster_name": "hsm-vault",
        "hsm": "ok" if hsm_ok else "unavailable",
        "database": "ok" if db_ok else "unavailable",
    }
    status = 200 if hsm_ok and db_ok else 503
    return Response(content=encode(body), status_code=status, media_type="application/json")


@get("/metrics", opt={PUBLIC: True}, include_in_schema=False)
async def metrics() -> Response[bytes]:
    return Response(content=generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _list_method(app: ASGIApp) -> ASGIApp:
    """Vault clients send ``LIST /v1/...``; it is ``GET ...?list=true``."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        raw: dict[str, Any] = scope  # type: ignore[assignment]
        if raw["type"] == "http" and raw.get("method") == "LIST":
            raw = dict(raw)
            raw["method"] = "GET"
            query = raw.get("query_string", b"")
            raw["query_string"] = (query + b"&" if query else b"") + b"list=true"
        await app(raw, receive, send)  # type: ignore[arg-type]

    return wrapped


def create_litestar(
    settings: Settings | None = None,
    runtime_factory: Callable[[Settings], Runtime] | None = None,
    *,
    owns_runtime: bool = True,
) -> Litestar:
    """The Litestar app; each worker process builds its own runtime (HSM session, pools).

    ``owns_runtime=False`` leaves the runtime open at shutdown: closing the session that
    logged in logs out every session of the process (PKCS#11 login state is per process).
    """
    settings = settings or load_settings()
    factory = runtime_factory or Runtime.start

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.runtime = factory(settings)
        try:
            yield
        finally:
            if owns_runtime:
                app.state.runtime.close()

    config = AppConfig(
        route_handlers=[
            TransitController,
            OtpController,
            SigningController,
            PayoutController,
            health,
            metrics,
        ],
        before_request=authorize,
        exception_handlers={
            VaultError: _vault_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="hsm-vault",
            version=VERSION,
            path=OPENAPI_PATH,
            render_plugins=[JsonRenderPlugin()],
        ),
        request_max_body_size=settings.max_body_bytes,
        debug=False,
        logging_config=None,
    )
    return Litestar.from_config(config)


def create_app(
    settings: Settings | None = None, runtime_factory: Callable[[Settings], Runtime] | None = None
) -> ASGIApp:
    settings = settings or load_settings()
    app = create_litestar(settings, runtime_factory)
    return fast_path(app, _list_method(app), settings.max_body_bytes)


def create_default_app() -> ASGIApp:
    """The uvicorn factory: settings from the environment, the HSM from the settings."""
    return create_app()
