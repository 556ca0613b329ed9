"""The composition root of the HTTP service: route declarations (Litestar, for routing and
the OpenAPI document), the gate in front of them, and the ``Vault`` each worker builds when
it starts (``vault.runtime``: no HSM or database I/O at start)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Sequence

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig

from api import documents, metrics
from api.call import Call
from api.export import ExportController
from api.gate import Gate
from api.otp import OtpController
from api.payout import PayoutController
from api.processes import run_dir
from api.signing import SigningController
from api.stages import AuditStage, QuotaStage, SingleUse, Subjects
from api.system import SystemController
from api.transit import TransitController
from api.watchdog import Watchdog
from vault import VERSION, logs
from vault.config import Settings, load_settings
from vault.runtime import Vault, open_runner

CONTROLLERS = (
    TransitController,
    SigningController,
    ExportController,
    OtpController,
    PayoutController,
    SystemController,
)


def _never_injected() -> Call:  # pragma: no cover - the gate passes the call itself
    raise RuntimeError("routes are called by the gate, never by Litestar")


def routes() -> Litestar:
    """The route table: every path, its method, its operation and its shapes."""
    config = AppConfig(
        route_handlers=list(CONTROLLERS),
        dependencies={"call": Provide(_never_injected, sync_to_thread=False)},
        openapi_config=OpenAPIConfig(
            title="hsm-vault",
            version=VERSION,
            description=(
                "An HSM-backed vault with HashiCorp Vault Transit's API. Every key is "
                "generated in and used only inside a PKCS#11 HSM."
            ),
            # Litestar's own document routes are not ours: the gate never serves them.
            path="/_litestar_schema",
        ),
        debug=False,
        logging_config=None,
    )
    app = Litestar.from_config(config)
    documents.publish(app)
    return app


def create_app(
    settings: Settings | None = None,
    open_vault: Callable[[Settings], Vault] | None = None,
    *,
    on_startup: Sequence[Callable[[], None]] = (),
    on_shutdown: Sequence[Callable[[], None]] = (),
) -> Gate:
    """The ASGI application of one worker."""
    settings = settings or load_settings()
    opener = open_vault or Vault.open
    return Gate(
        routes(),
        lambda: opener(settings),
        max_body=settings.max_body_bytes,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        # In this order: subjects first (the quotas count them), the audit record last.
        stages=(Subjects(), SingleUse(), QuotaStage(), AuditStage()),
    )


def _open_observed(settings: Settings) -> Vault:
    """The worker's vault, its HSM runner and its audit chain reporting to the metrics."""
    return Vault.open(
        settings,
        runner=open_runner(settings, metrics.HsmMetrics()),
        audit_observer=metrics.AUDIT,
    )


def settle() -> None:
    """The worker's last start-up step: what it has built (modules, the vault, its policies)
    lives as long as it does, so it is moved out of the cyclic collector's way and a full
    collection scans only what requests make. Unfrozen, each full collection stopped the
    worker for 70-100 ms every 2-3 s under load, with every request in flight waiting."""
    gc.collect()
    gc.freeze()


def create_default_app() -> Gate:
    """The server's factory (in each worker): settings from the environment, the HSM from
    the settings, JSON logs, metrics of the HSM and of the worker's life, and the watchdog
    over the sibling workers (when the parent is ``hsm-vault serve``, which made its run dir)."""
    logs.configure()
    settings = load_settings()
    on_startup: list[Callable[[], None]] = [metrics.worker_started]
    on_shutdown: list[Callable[[], None]] = [metrics.worker_stopped]
    here = run_dir(settings.var_dir, os.getppid())
    if here.is_dir():
        watchdog = Watchdog(here / "workers", settings.worker_stall_timeout)
        on_startup.append(watchdog.start)
        on_shutdown.append(watchdog.stop)
    on_startup.append(settle)
    return create_app(settings, _open_observed, on_startup=on_startup, on_shutdown=on_shutdown)
