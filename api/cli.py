"""``hsm-vault``: the officers' and operators' tool (``vault.cli``) plus ``serve``, which
starts the HTTP service and so belongs to ``api/``."""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import urllib.error
import urllib.request

import click

from api.processes import clear_stale_run_dirs, run_dir
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
    # This server's own run dir: every worker writes its metrics there and /metrics sums
    # them (prometheus-client's multiprocess mode); the workers' heartbeats (api/watchdog.py).
    clear_stale_run_dirs(settings.var_dir)
    here = run_dir(settings.var_dir, os.getpid())
    (here / "metrics").mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(here / "metrics")
    try:
        if settings.tls_client_ca is not None:
            _serve_mutual_tls(settings, workers or settings.workers)
        else:
            _granian(settings, workers or settings.workers)
    finally:
        shutil.rmtree(here, ignore_errors=True)


@main.command()
@click.option(
    "--ready",
    is_flag=True,
    help="Readiness (/v1/sys/health: the HSM and the database usable now) instead of liveness.",
)
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Seconds to wait.")
def probe(ready: bool, timeout: float) -> None:
    """Exit 0 when this host's server answers 200 (a container's HEALTHCHECK).

    Liveness (/v1/sys/live) by default: a container is restarted only when its server does not
    answer at all, never because the HSM or the database is away (restarting would not bring
    them back). Readiness is the load balancer's probe (docs/deploy.md).
    """
    settings = settings_or_exit()
    path = "/v1/sys/health" if ready else "/v1/sys/live"
    status = _status_of(settings, path, timeout)
    click.echo(f"{path}: {status if status is not None else 'no answer'}")
    sys.exit(0 if status == 200 else 1)


def _status_of(settings: Settings, path: str, timeout: float) -> int | None:
    host = settings.host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    tls = bool(os.environ.get("VAULT_TLS_CERT"))
    netloc = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{netloc}:{settings.port}{path}"
    # The probe asks its own host over loopback and sends nothing secret; the certificate
    # names the public host, not the loopback address, so it is not checked here.
    context = ssl._create_unverified_context() if tls else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def _granian(settings: Settings, workers: int) -> None:
    """granian; TLS when ``VAULT_TLS_CERT``/``VAULT_TLS_KEY`` are set (TLS 1.3 at least)."""
    from granian import Granian  # noqa: PLC0415
    from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415

    Granian(
        "api.app:create_default_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,  # the gate speaks it natively (api/gate.py)
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
