"""``hsm-vault tokens ...``: revoking service tokens (every replica refuses a revoked token
within about two seconds). Revoking every token of a service needs two officers' approval
(``hsm-vault approvals request service.revoke_tokens SERVICE``)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from vault.cli._common import (
    approval_option,
    authority,
    domain_errors,
    dry_run_option,
    officer_option,
    opened_vault,
)
from vault.cli._root import main


def moment(text: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("a time: seconds since the epoch or ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@main.group()
def tokens() -> None:
    """Revoke service tokens (effective on every replica within about two seconds)."""


@tokens.command("revoke")
@click.argument("service")
@click.argument("jti")
@click.option("--expires-at", help="The token's exp, if known (else the longest a token lives).")
@officer_option
@dry_run_option
@domain_errors
def tokens_revoke(
    service: str, jti: str, expires_at: str | None, officer_key: Path | None, dry_run: bool
) -> None:
    """Revoke one token of SERVICE by its JTI."""
    until = moment(expires_at) if expires_at is not None else None
    with opened_vault() as vault:
        if vault.policies.service(service) is None:
            raise click.ClickException(f"no service {service!r} in the policies")
        by = authority(vault, officer_key, dry_run=dry_run)
        if dry_run:
            click.echo(f"would revoke: {service} token {jti}")
            return
        vault.revoker.revoke_token(service, jti, by, until)
    click.echo(f"revoked: {service} token {jti}")


@tokens.command("revoke-service")
@click.argument("service")
@click.option("--before", default=None, help="Issued before this time (default: now).")
@approval_option
@officer_option
@dry_run_option
@domain_errors
def tokens_revoke_service(
    service: str,
    before: str | None,
    approval: str | None,
    officer_key: Path | None,
    dry_run: bool,
) -> None:
    """Revoke every token of SERVICE issued before a time (needs --approval: two officers)."""
    from vault.approvals import Action  # noqa: PLC0415

    cutoff = moment(before) if before is not None else time.time()
    with opened_vault() as vault:
        if vault.policies.service(service) is None:
            raise click.ClickException(f"no service {service!r} in the policies")
        by = authority(vault, officer_key, approval, dry_run=dry_run)
        if dry_run:
            approvers = vault.dual_control.check(approval, Action.revoke_tokens(service))
            click.echo(
                f"would revoke every token of {service} issued before {cutoff:.0f} "
                f"(approved by {', '.join(approvers)})"
            )
            return
        vault.revoker.revoke_service(service, cutoff, by)
    click.echo(f"revoked: every token of {service} issued before {cutoff:.0f}")


@tokens.command("revoked")
@domain_errors
def tokens_revoked() -> None:
    """List the revocations still in force."""
    with opened_vault() as vault:
        for r in vault.revoker.active():
            what = f"jti={r.jti}" if r.jti is not None else f"issued_before={r.issued_before:.0f}"
            click.echo(f"{r.service}\t{what}\tuntil={r.expires_at:.0f}\tby={r.actor}")
