"""``hsm-vault``: the operators' and security officers' tool. PINs come from the
environment (``VAULT_PIN``, ``VAULT_SO_PIN``) or PIN files, never from the command line."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from typing import TYPE_CHECKING

import click

from vault import logs
from vault.config import Settings, load_settings
from vault.errors import VaultError

if TYPE_CHECKING:
    from vault.runtime import Vault


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
def main(verbose: bool) -> None:
    """Operate hsm-vault: set up the HSM token, serve the API, manage keys."""
    logs.configure(logging.DEBUG if verbose else logging.INFO, json_lines=False)


@main.command()
def bootstrap() -> None:
    """Create what a development or CI instance needs under VAULT_VAR_DIR (default var/):
    SoftHSM2 config, PIN files, the token, the schema, the declared keys, dev credentials."""
    from vault.bootstrap import bootstrap as run  # noqa: PLC0415

    try:
        run(settings_or_exit())
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("bootstrap complete")


@main.command()
def migrate() -> None:
    """Apply the database migrations."""
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


@main.group()
def keys() -> None:
    """Manage keys directly on the HSM and the database (not through the API)."""


def _runtime() -> Vault:
    from vault.runtime import Vault  # noqa: PLC0415

    return Vault.open(settings_or_exit())


def officer_identity() -> str:
    """Who runs a command, for the audit chain: ``VAULT_OFFICER``, else the login name."""
    return os.environ.get("VAULT_OFFICER") or getpass.getuser()


def emit(rt: Vault, kind: str, key: str | None = None, version: int | None = None) -> None:
    """Put what a command changed into the audit chain, with the officer's identity."""
    from vault.events import LifecycleEvent  # noqa: PLC0415

    rt.events.emit(LifecycleEvent(kind, officer_identity(), key, version))


@keys.command("list")
def keys_list() -> None:
    """List keys with their versions."""
    import asyncio  # noqa: PLC0415

    rt = _runtime()
    try:
        for name in asyncio.run(rt.registry.names()):
            key = rt.registry.get_sync(name)
            click.echo(
                f"{name}\t{key.type.name}\tlatest=v{key.latest_version}\tmin_decryption=v{key.min_decryption_version}"
            )
    finally:
        rt.close()


@keys.command("create")
@click.argument("name")
@click.option("--type", "type_name", default="aes256-gcm96", show_default=True)
def keys_create(name: str, type_name: str) -> None:
    """Create key NAME (idempotent)."""
    rt = _runtime()
    try:
        _, created = rt.registry.create_sync(name, type_name)
        if created:
            emit(rt, "key.create", name, 1)
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rt.close()
    click.echo(f"{'created' if created else 'exists'}: {name}")


@keys.command("rotate")
@click.argument("name")
def keys_rotate(name: str) -> None:
    """Add a new version to key NAME and make it the one that encrypts."""
    rt = _runtime()
    try:
        key = rt.registry.rotate_sync(name)
        emit(rt, "key.rotate", name, key.latest_version)
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rt.close()
    click.echo(f"{name}: latest version is now v{key.latest_version}")


@main.command("hsm-objects")
def hsm_objects() -> None:
    """List the token's objects and their flags, as JSON lines (never any key material)."""
    from vault.hsm import Hsm  # noqa: PLC0415
    from vault.runtime import open_runner  # noqa: PLC0415

    hsm = Hsm(open_runner(settings_or_exit()))
    try:
        try:
            objects = hsm.run_sync(lambda ops: ops.objects())
        except VaultError as exc:
            raise click.ClickException(str(exc)) from None
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
    finally:
        hsm.close()


if __name__ == "__main__":
    sys.exit(main())
