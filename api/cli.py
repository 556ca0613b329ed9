"""``hsm-vault``: the officers' and operators' tool (``vault.cli``) plus ``serve``, which
starts the HTTP service and so belongs to ``api/``."""

from __future__ import annotations

import os
import shutil
import sys

import click

from vault import trust_cli  # noqa: F401 - registers `hsm-vault tokens` and `hsm-vault audit`
from vault.cli import main, settings_or_exit


@main.command()
@click.option("--workers", type=int, default=None, help="Worker processes (default VAULT_WORKERS).")
def serve(workers: int | None) -> None:
    """Serve the API on VAULT_LISTEN (default 127.0.0.1:8200).

    The server is granian: its HTTP parser takes Vault's ``LIST`` method, which hvac sends
    and httptools-based servers reject before the application sees it. Each worker process
    builds its own vault (and PKCS#11 session) when it starts; a worker starts while the HSM
    or the database is away and answers 503 until they are back.
    """
    from granian import Granian  # noqa: PLC0415
    from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415

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
    Granian(
        "api.app:create_default_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=workers or settings.workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=4096,
        log_access=False,
        respawn_failed_workers=True,
    ).serve()


if __name__ == "__main__":
    sys.exit(main())
