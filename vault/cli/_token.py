"""``hsm-vault token ...``: initialize a production token, change and reset its PINs.

Every PIN is given by a person, never generated silently (``bootstrap`` is the dev path
that does): from the environment, a file named by an option, or a prompt without echo.
"""

from __future__ import annotations

from pathlib import Path

import click

from vault.cli._common import domain_errors, dry_run_option, secret, settings_or_exit
from vault.cli._root import main
from vault.config import Settings
from vault.errors import ConfigError
from vault.events import LifecycleEvent, LogSink

_PIN_FILE = click.Path(dir_okay=False, path_type=Path)
_SO_PIN_FILE = click.option(
    "--so-pin-file",
    type=_PIN_FILE,
    envvar="VAULT_SO_PIN_FILE",
    help="Else $VAULT_SO_PIN or a prompt.",
)
_NEW_PIN_FILE = click.option(
    "--new-pin-file", type=_PIN_FILE, help="The new PIN (else $VAULT_NEW_PIN or a prompt)."
)
_UPDATE_PIN_FILE = click.option(
    "--update-pin-file",
    is_flag=True,
    help="Write the new user PIN to $VAULT_PIN_FILE, where the service reads it.",
)


@main.group()
def token() -> None:
    """The HSM token itself: initialize it, change or reset its PINs."""


def _module_ready(settings: Settings) -> None:
    """SoftHSM2 needs its configuration file before the module is loaded."""
    from vault.bootstrap import ensure_softhsm_config  # noqa: PLC0415

    if "softhsm" in settings.pkcs11_module:
        ensure_softhsm_config(settings)


def _hsm_call(fn: object) -> None:
    """Run an ``hsm`` set-up call; its errors become the officer's message."""
    import hsm  # noqa: PLC0415

    try:
        fn()  # type: ignore[operator]
    except hsm.errors.HsmError as exc:
        raise ConfigError(str(exc)) from None


def _record(kind: str, settings: Settings, role: str) -> None:
    """Token ceremonies happen before (or beside) a vault: their events go to the log."""
    LogSink().emit(LifecycleEvent(kind, f"token:{role}", details={"token": settings.token_label}))


@token.command("init")
@click.option("--label", default=None, help="Token label (default $VAULT_TOKEN_LABEL).")
@_SO_PIN_FILE
@click.option(
    "--pin-file", type=_PIN_FILE, envvar="VAULT_PIN_FILE", help="Else $VAULT_PIN or a prompt."
)
@dry_run_option
@domain_errors
def token_init(
    label: str | None, so_pin_file: Path | None, pin_file: Path | None, dry_run: bool
) -> None:
    """Initialize a free slot's token for production: the security officer's PIN and the
    token user's PIN (the service's) are both given, and must differ. Refused when a token
    with the label exists already."""
    import hsm  # noqa: PLC0415

    settings = settings_or_exit()
    label = label or settings.token_label
    _module_ready(settings)
    if hsm.token_exists(settings.pkcs11_module, label):
        raise click.ClickException(f"a token labelled {label!r} exists already")
    so_pin = secret("security officer PIN", "VAULT_SO_PIN", so_pin_file, confirm=True)
    user_pin = secret("token user PIN", "VAULT_PIN", pin_file, confirm=True)
    if so_pin == user_pin:
        raise click.ClickException("the security officer's and the user's PINs must differ")
    if dry_run:
        click.echo(f"dry run: would initialize a token labelled {label!r} and set its user PIN")
        return
    _hsm_call(lambda: hsm.init_token(settings.pkcs11_module, label, so_pin, user_pin))
    _record("token.init", settings, "so")
    click.echo(f"initialized token {label!r}; next: hsm-vault migrate, hsm-vault keys create")


@token.command("change-pin")
@click.option("--so", is_flag=True, help="Change the security officer's PIN, not the user's.")
@click.option(
    "--pin-file",
    type=_PIN_FILE,
    help="The current PIN (else $VAULT_PIN/$VAULT_SO_PIN or a prompt).",
)
@_NEW_PIN_FILE
@_UPDATE_PIN_FILE
@dry_run_option
@domain_errors
def change_pin(
    so: bool,
    pin_file: Path | None,
    new_pin_file: Path | None,
    update_pin_file: bool,
    dry_run: bool,
) -> None:
    """Change the token user's PIN (or the security officer's, with --so), logged in with
    the current one. Running services keep their sessions; they log in with the new PIN
    the next time they open one, so update their PIN source too (--update-pin-file)."""
    import hsm  # noqa: PLC0415

    settings = settings_or_exit()
    _module_ready(settings)
    role = "security officer PIN" if so else "token user PIN"
    current_file = pin_file or (None if so else _existing(settings.pin_file))
    old = secret(f"current {role}", "VAULT_SO_PIN" if so else "VAULT_PIN", current_file)
    new = secret(f"new {role}", "VAULT_NEW_PIN", new_pin_file, confirm=True)
    if new == old:
        raise click.ClickException("the new PIN is the current one")
    if dry_run:
        click.echo(f"dry run: would change the {role} of token {settings.token_label!r}")
        return
    _hsm_call(lambda: hsm.set_pin(settings.pkcs11_module, settings.token_label, old, new, so=so))
    _record("token.pin_change", settings, "so" if so else "user")
    if update_pin_file and not so:
        _write_pin(settings.pin_file, new)
    click.echo(f"changed the {role} of token {settings.token_label!r}")


@token.command("reset-user-pin")
@_SO_PIN_FILE
@_NEW_PIN_FILE
@_UPDATE_PIN_FILE
@dry_run_option
@domain_errors
def reset_user_pin(
    so_pin_file: Path | None, new_pin_file: Path | None, update_pin_file: bool, dry_run: bool
) -> None:
    """The security officer sets a new token user PIN (a forgotten or locked one)."""
    import hsm  # noqa: PLC0415

    settings = settings_or_exit()
    _module_ready(settings)
    so_pin = secret("security officer PIN", "VAULT_SO_PIN", so_pin_file)
    new = secret("new token user PIN", "VAULT_NEW_PIN", new_pin_file, confirm=True)
    if dry_run:
        click.echo(f"dry run: would reset the user PIN of token {settings.token_label!r}")
        return
    _hsm_call(lambda: hsm.reset_user_pin(settings.pkcs11_module, settings.token_label, so_pin, new))
    _record("token.pin_reset", settings, "so")
    if update_pin_file:
        _write_pin(settings.pin_file, new)
    click.echo(f"reset the user PIN of token {settings.token_label!r}")


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _write_pin(path: Path, pin: str) -> None:
    from vault.bootstrap import write_private  # noqa: PLC0415

    write_private(path, (pin + "\n").encode())
    click.echo(f"wrote the new PIN to {path}")
