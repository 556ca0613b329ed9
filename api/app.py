"""The composition root of the HTTP service: route declarations (Litestar, for routing and
the OpenAPI document), the gate in front of them, and the ``Vault`` each worker builds when
it starts (``vault.runtime``: no HSM or database I/O at start)."""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig

from api import documents, metrics
from api.call import Call
from api.gate import Gate
from api.otp import OtpController
from api.payout import PayoutController
from api.signing import SigningController
from api.stages import AuditStage, QuotaStage, SingleUse, Subjects
from api.system import SystemController
from api.transit import TransitController
from vault import VERSION, logs
from vault.config import Settings, load_settings
from vault.runtime import Vault

CONTROLLERS = (
    TransitController,
    SigningController,
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
    settings: Settings | None = None, open_vault: Callable[[Settings], Vault] | None = None
) -> Gate:
    """The ASGI application of one worker."""
    settings = settings or load_settings()
    opener = open_vault or _open_vault
    return Gate(
        routes(),
        lambda: opener(settings),
        max_body=settings.max_body_bytes,
        # In this order: subjects first (the quotas count them), the audit record last.
        stages=(Subjects(), SingleUse(), QuotaStage(), AuditStage()),
    )


def _open_vault(settings: Settings) -> Vault:
    return Vault.open(settings, audit_observer=metrics.AUDIT)


def create_default_app() -> Gate:
    """The server's factory (in each worker): settings from the environment, the HSM from
    the settings, JSON logs."""
    logs.configure()
    return create_app()
