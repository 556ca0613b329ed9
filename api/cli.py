"""``hsm-vault``: the officers' and operators' tool (``vault.cli``) plus ``serve``, which
starts the HTTP service and so belongs to ``api/``."""

from __future__ import annotations

import os
import shutil
import sys

import click

from vault import trust_cli  # noqa: F401 - registers `hsm-vault tokens` and `hsm-vault audit`
from vault.cli import main, settings_or_exit
from vault.config import Settings


@main.command()
@click.option("--workers", type=int, default=None, help="Worker processes (default VAULT_WORKERS).")
def serve(workers: int | None) -> None:
    """Serve the API on VAULT_LISTEN (default 127.0.0.1:8200); over TLS with VAULT_TLS_CERT
    and VAULT_TLS_KEY, and mutual TLS with VAULT_TLS_CLIENT_CA.

    The server is granian: its HTTP parser takes Vault's ``LIST`` method, which hvac sends
    and httptools-based servers reject before the application sees it. Each worker process
    builds its own vault (and PKCS#11 session) when it starts; a worker starts while the HSM
    or the database is away and answers 503 until they are back.
    """
    from vault.bootstrap import ensure_softhsm_config  # noqa: PLC0415

    settings = settings_or_exit()
    if settings.softhsm_conf.exists() or "softhsm" in settings.pkcs11_module:
        ensure_softhsm_config(settings)
    # Every worker writes its metrics here; /metrics sums them (prometheus-client's
    # multiprocess mode). Emptied at start: the files of a previous server are stale.
    metrics_dir = settings.var_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if settings.tls_client_ca is not None:
        _serve_mutual_tls(settings, workers or settings.workers)
    else:
        _serve(settings, workers or settings.workers)


def _serve(settings: Settings, workers: int) -> None:
    """granian; TLS when ``VAULT_TLS_CERT``/``VAULT_TLS_KEY`` are set (TLS 1.3 at least)."""
    from granian import Granian  # noqa: PLC0415
    from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415

    Granian(
        "api.app:create_default_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=4096,
        log_access=False,
        respawn_failed_workers=True,
        ssl_cert=settings.tls_cert,
        ssl_key=settings.tls_key,
    ).serve()


def _serve_mutual_tls(settings: Settings, workers: int) -> None:
    """uvicorn with the client-certificate protocol (``api.tls``): clients present a
    certificate from ``VAULT_TLS_CLIENT_CA`` (required unless ``VAULT_TLS_CLIENT_OPTIONAL``)."""
    import ssl  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from api.tls import ClientCertificateH11  # noqa: PLC0415

    uvicorn.run(
        "api.app:create_default_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        http=ClientCertificateH11,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=4096,
        ssl_certfile=str(settings.tls_cert),
        ssl_keyfile=str(settings.tls_key),
        ssl_ca_certs=str(settings.tls_client_ca),
        ssl_cert_reqs=ssl.CERT_OPTIONAL if settings.tls_client_optional else ssl.CERT_REQUIRED,
    )


if __name__ == "__main__":
    sys.exit(main())
