"""What every officers' command shares: settings, domain errors as exit messages, secrets
from the environment, a file or a prompt (never argv), the officer's own credential, the
HSM login, progress bars."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from vault.config import Settings, load_settings
from vault.errors import ConfigError, VaultError

if TYPE_CHECKING:
    from vault.approvals import Authority
    from vault.officers import OfficerCredential
    from vault.runtime import Vault

P = ParamSpec("P")
T = TypeVar("T")

# PKCS#11 tokens take PINs of 4 bytes and more (SoftHSM2: 4 to 255).
MIN_PIN_LENGTH = 4
MAX_PIN_LENGTH = 255


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None


def domain_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """A domain error ends the command with its message (exit status 1), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except VaultError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def dry_run_option(fn: Callable[P, T]) -> Callable[P, T]:
    return click.option(
        "--dry-run",
        is_flag=True,
        help="Check everything and say what would change; change nothing.",
    )(fn)


def json_option(fn: Callable[P, T]) -> Callable[P, T]:
    return click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")(fn)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, sort_keys=True, default=str))


# -- secrets: environment, file or prompt ------------------------------------------------------


def secret(
    what: str, env: str, path: Path | None, *, confirm: bool = False, check_length: bool = True
) -> str:
    """A PIN or passphrase: the environment variable ``env``, else the first line of
    ``path``, else asked for without echo (twice with ``confirm``). Never from argv."""
    value = os.environ.get(env, "")
    if not value and path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            raise click.ClickException(f"cannot read the {what} file {path}") from None
        value = text.splitlines()[0].strip() if text.strip() else ""
        if not value:
            raise click.ClickException(f"the {what} file {path} is empty")
    if not value:
        value = click.prompt(
            what[0].upper() + what[1:], hide_input=True, confirmation_prompt=confirm, err=True
        )
    if check_length and not MIN_PIN_LENGTH <= len(value.encode()) <= MAX_PIN_LENGTH:
        raise click.ClickException(
            f"the {what} must be {MIN_PIN_LENGTH} to {MAX_PIN_LENGTH} bytes long"
        )
    return value


def officer_pin(settings: Settings) -> Callable[[], str]:
    """The HSM login of the officers' tool, asked for once per process: the officers' own
    PIN where the HSM has a role for them (``VAULT_OFFICER_PIN`` / ``VAULT_OFFICER_PIN_FILE``:
    a Crypto Officer's, docs/officers.md), else the token user's (``VAULT_PIN`` / the PIN
    file), else a prompt."""

    @functools.cache
    def pin() -> str:
        own = os.environ.get("VAULT_OFFICER_PIN_FILE")
        if os.environ.get("VAULT_OFFICER_PIN") or own:
            return secret("officer PIN", "VAULT_OFFICER_PIN", Path(own) if own else None)
        try:
            return settings.user_pin()
        except ConfigError:
            return secret("HSM user PIN", "VAULT_PIN", None)

    return pin


# -- the officer's own credential -------------------------------------------------------------


def officer_option(fn: Callable[P, T]) -> Callable[P, T]:
    return click.option(
        "--officer-key",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="VAULT_OFFICER_KEY",
        help="Your officer private key (PEM; default $VAULT_OFFICER_KEY). Its passphrase "
        "comes from $VAULT_OFFICER_KEY_PASSPHRASE or a prompt.",
    )(fn)


def approval_option(fn: Callable[P, T]) -> Callable[P, T]:
    return click.option(
        "--approval",
        metavar="ID",
        help="The approval request (two officers) that allows this: `hsm-vault approvals`.",
    )(fn)


def officer(vault: Vault, key_path: Path | None) -> OfficerCredential:
    """The officer whose private key is at ``key_path``, as declared in the policies."""
    from vault import officers  # noqa: PLC0415

    if key_path is None:
        raise click.ClickException(
            "this changes the vault: say who you are with --officer-key or $VAULT_OFFICER_KEY"
        )
    passphrase = None
    if officers.is_encrypted(key_path):
        passphrase = secret(
            "officer key passphrase", "VAULT_OFFICER_KEY_PASSPHRASE", None, check_length=False
        ).encode()
    return officers.identify(vault.policies, officers.load_private_key(key_path, passphrase))


def authority(
    vault: Vault, key_path: Path | None, approval: str | None = None, *, dry_run: bool = False
) -> Authority:
    from vault.approvals import Authority  # noqa: PLC0415

    if dry_run and key_path is None:
        return Authority("officer:(dry run)", approval)
    return Authority(f"officer:{officer(vault, key_path).name}", approval)


# -- the vault, opened with the officers' HSM login -------------------------------------------


@contextmanager
def opened_vault(settings: Settings | None = None) -> Iterator[Vault]:
    from vault.runtime import Vault, open_runner  # noqa: PLC0415

    settings = settings or settings_or_exit()
    try:
        vault = Vault.open(settings, runner=open_runner(settings, pin=officer_pin(settings)))
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        yield vault
    finally:
        vault.close()


# -- progress ----------------------------------------------------------------------------------


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error (drawn only on a terminal); yields ``advance(n)``."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
