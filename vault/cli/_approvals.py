"""``hsm-vault approvals ...`` (dual control) and ``hsm-vault officers ...`` (their keys).

Two different officers approve a destructive action, each signing its canonical description
with their own key; then either of them (or the API, with ``X-Vault-Approval``) executes it
once, before the request expires.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from vault.cli._common import (
    domain_errors,
    emit_json,
    json_option,
    officer,
    officer_option,
    opened_vault,
    secret,
)
from vault.cli._root import main


@main.group()
def approvals() -> None:
    """Dual control: request, approve and inspect actions that need two officers."""


def _describe(request: Any) -> str:
    approvers = ", ".join(a.officer for a in request.approvals) or "nobody"
    expires = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(request.expires_at))
    state = "used" if request.executed_at is not None else f"expires {expires}Z"
    return (
        f"{request.id}  {request.action.describe()}  requested by {request.requested_by}; "
        f"approved by {approvers}; {state}"
    )


def _as_dict(request: Any) -> dict[str, Any]:
    return {
        "id": request.id,
        "action": request.action.kind,
        "target": request.action.target,
        "params": dict(request.action.params),
        "requested_by": request.requested_by,
        "approved_by": [a.officer for a in request.approvals],
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "executed_at": request.executed_at,
        "executed_by": request.executed_by,
    }


@approvals.command("request")
@click.argument(
    "action",
    type=click.Choice(
        [
            "key.delete",
            "key.trim",
            "key.lower_min_decryption_version",
            "service.revoke_tokens",
        ]
    ),
)
@click.argument("target")
@click.option("--min-available-version", type=int, help="key.trim: the new floor.")
@click.option("--min-decryption-version", type=int, help="key.lower_min_decryption_version.")
@officer_option
@domain_errors
def approvals_request(
    action: str,
    target: str,
    min_available_version: int | None,
    min_decryption_version: int | None,
    officer_key: Path | None,
) -> None:
    """Ask for ACTION on TARGET (a key or a service), approving it yourself. Prints the
    request's id: another officer approves it with `hsm-vault approvals approve ID`."""
    from vault.approvals import Action  # noqa: PLC0415

    params: dict[str, int] = {}
    if action == "key.trim":
        if min_available_version is None:
            raise click.UsageError("key.trim needs --min-available-version")
        params["min_available_version"] = min_available_version
    elif action == "key.lower_min_decryption_version":
        if min_decryption_version is None:
            raise click.UsageError("this action needs --min-decryption-version")
        params["min_decryption_version"] = min_decryption_version
    with opened_vault() as vault:
        me = officer(vault, officer_key)
        made = vault.dual_control.request(Action(action, target, params), me.name, me.sign)
    click.echo(f"requested: {_describe(made)}", err=True)
    click.echo(made.id)


@approvals.command("approve")
@click.argument("request_id")
@officer_option
@domain_errors
def approvals_approve(request_id: str, officer_key: Path | None) -> None:
    """Approve request REQUEST_ID with your own key (not the requester's)."""
    with opened_vault() as vault:
        me = officer(vault, officer_key)
        click.echo(f"approving: {_describe(vault.dual_control.get(request_id))}", err=True)
        done = vault.dual_control.approve(request_id, me.name, me.sign)
    click.echo(f"approved: {_describe(done)}")


@approvals.command("list")
@click.option("--all", "everything", is_flag=True, help="Also used and expired requests.")
@json_option
@domain_errors
def approvals_list(everything: bool, as_json: bool) -> None:
    """Requests awaiting approval or execution (the latest 200 with --all)."""
    with opened_vault() as vault:
        found = vault.dual_control.store.recent() if everything else vault.dual_control.pending()
    for request in found:
        if as_json:
            emit_json(_as_dict(request))
        else:
            click.echo(_describe(request))


@approvals.command("show")
@click.argument("request_id")
@json_option
@domain_errors
def approvals_show(request_id: str, as_json: bool) -> None:
    """One request: the action, who approved it, and whether their signatures verify."""
    with opened_vault() as vault:
        request = vault.dual_control.get(request_id)
        valid = request.valid_approvers(vault.dual_control.officers)
    if as_json:
        emit_json({**_as_dict(request), "valid_approvers": valid})
    else:
        click.echo(_describe(request))
        click.echo(f"signatures that verify: {', '.join(valid) or 'none'}")


@main.group()
def officers() -> None:
    """Security officers' own key pairs."""


@officers.command("keygen")
@click.argument("name")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the private key (PEM, mode 0600); the public one goes beside it.",
)
@click.option("--type", "kind", type=click.Choice(["ed25519", "p256"]), default="ed25519")
@click.option(
    "--no-passphrase", is_flag=True, help="Leave the private key unencrypted (development)."
)
@domain_errors
def officers_keygen(name: str, out_path: Path, kind: str, no_passphrase: bool) -> None:
    """Make officer NAME's key pair. The private key is encrypted with a passphrase
    ($VAULT_OFFICER_KEY_PASSPHRASE or a prompt); declare the public one in
    policies/officers.toml (printed here)."""
    from vault import officers as credentials  # noqa: PLC0415
    from vault.bootstrap import write_private  # noqa: PLC0415

    if out_path.exists():
        raise click.ClickException(f"{out_path} exists already")
    passphrase = None
    if not no_passphrase:
        passphrase = secret(
            "passphrase for the new key",
            "VAULT_OFFICER_KEY_PASSPHRASE",
            None,
            confirm=True,
            check_length=False,
        ).encode()
    key = credentials.generate(kind)
    write_private(out_path, credentials.private_pem(key, passphrase))
    public = credentials.public_pem(key)
    out_path.with_suffix(".pub.pem").write_bytes(public)
    click.echo(f"[officers.{name}]\npublic_key = '''\n{public.decode().strip()}\n'''")


@officers.command("whoami")
@officer_option
@domain_errors
def officers_whoami(officer_key: Path | None) -> None:
    """The officer your key belongs to (as declared in policies/officers.toml)."""
    with opened_vault() as vault:
        click.echo(officer(vault, officer_key).name)
