"""The ``hsm-vault`` group and its set-up commands (bootstrap, migrate, dev tokens)."""

from __future__ import annotations

import json
import logging

import click

from vault import logs
from vault.cli._common import domain_errors, settings_or_exit


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Operate hsm-vault: set up the HSM token, serve the API, manage keys.

    PINs, passphrases and keys never come from the command line: from the environment
    (VAULT_PIN, VAULT_SO_PIN, VAULT_OFFICER_PIN, ...), a file, or a prompt without echo.
    Every command that changes something takes --dry-run.
    """
    logs.configure(logging.DEBUG if verbose else logging.INFO, json_lines=False)
    if not verbose:  # the session's comings and goings are noise to an officer
        logging.getLogger("hsm").setLevel(logging.WARNING)


@main.command()
@domain_errors
def bootstrap() -> None:
    """Development and CI only: create what an instance needs under VAULT_VAR_DIR (default
    var/): SoftHSM2 config, random PIN files, the token, the schema, the declared keys,
    dev service and officer key pairs. Production: `hsm-vault token init` instead."""
    from vault.bootstrap import bootstrap as run  # noqa: PLC0415

    run(settings_or_exit())
    click.echo("bootstrap complete")


@main.command()
@domain_errors
def migrate() -> None:
    """Apply the database migrations (idempotent)."""
    from vault import store  # noqa: PLC0415

    engine = store.make_engine(settings_or_exit().database_url)
    try:
        store.migrate(engine)
    finally:
        engine.dispose()
    click.echo("database schema is up to date")


@main.command("dev-token")
@click.argument("service")
@click.option("--lifetime", type=int, default=None, help="Seconds (default 24h).")
def dev_token(service: str, lifetime: int | None) -> None:
    """Print a fresh token for a development SERVICE declared in policies/."""
    from vault.bootstrap import dev_key_path, load_dev_key, mint_token  # noqa: PLC0415

    settings = settings_or_exit()
    if not dev_key_path(settings, service).exists():
        raise click.ClickException(
            f"no dev key for {service!r}: run `make run` (or `hsm-vault bootstrap`) first"
        )
    token = mint_token(
        load_dev_key(settings, service),
        service,
        settings.jwt_audience,
        lifetime or settings.dev_token_lifetime,
    )
    click.echo(token)


@main.command("hsm-objects")
@domain_errors
def hsm_objects() -> None:
    """List the token's objects and their flags, as JSON lines (never any key material)."""
    from vault.cli._common import officer_pin  # noqa: PLC0415
    from vault.hsm import Hsm  # noqa: PLC0415
    from vault.runtime import open_runner  # noqa: PLC0415

    settings = settings_or_exit()
    hsm = Hsm(open_runner(settings, pin=officer_pin(settings)))
    try:
        objects = hsm.run_sync(lambda ops: ops.objects(), fresh=True)
    finally:
        hsm.close()
    for obj in objects:
        click.echo(
            json.dumps(
                {
                    "label": obj.label,
                    "id": obj.key_id.hex(),
                    "class": obj.object_class,
                    "key_type": obj.key_type,
                    "sensitive": obj.sensitive,
                    "extractable": obj.extractable,
                }
            )
        )
