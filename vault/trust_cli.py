"""``hsm-vault tokens ...`` and ``hsm-vault audit ...``: the security officers' commands for
service tokens and for the audit chain (registered on the main group by ``api.cli``)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vault.cli import _runtime, main, officer_identity
from vault.errors import VaultError
from vault.events import LifecycleEvent
from vault.tokens import Approved

if TYPE_CHECKING:
    from vault.runtime import Vault


def officer_approvals() -> Approved:
    """THE DUAL-CONTROL SEAM: whether two officers approved an action on a target.

    Officers' approvals (two different officers within a time limit) are the key-lifecycle
    work's; until they are wired in here, nothing counts as approved and the commands that
    need dual control refuse."""

    def approved(action: str, target: str) -> bool:
        del action, target
        return False

    return approved


@contextmanager
def _vault() -> Iterator[Vault]:
    """A vault for one command; its errors become the command's (exit 1, the reason)."""
    rt = _runtime()
    try:
        yield rt
    except VaultError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        rt.close()


def _moment(text: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("a time: seconds since the epoch or ISO 8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


# -- tokens --------------------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """Revoke service tokens (effective on every replica within about two seconds)."""


@tokens.command("revoke")
@click.argument("service")
@click.argument("jti")
@click.option("--expires-at", help="The token's exp, if known (else the longest a token lives).")
def tokens_revoke(service: str, jti: str, expires_at: str | None) -> None:
    """Revoke one token of SERVICE by its JTI."""
    with _vault() as rt:
        actor = officer_identity()
        rt.revoker.revoke_token(
            service, jti, actor, _moment(expires_at) if expires_at is not None else None
        )
        rt.events.emit(
            LifecycleEvent("tokens.revoke", actor, details={"service": service, "jti": jti})
        )
    click.echo(f"revoked: {service} token {jti}")


@tokens.command("revoke-service")
@click.argument("service")
@click.option("--before", default=None, help="Issued before this time (default: now).")
def tokens_revoke_service(service: str, before: str | None) -> None:
    """Revoke every token of SERVICE issued before a time (needs two officers' approval)."""
    cutoff = _moment(before) if before is not None else time.time()
    with _vault() as rt:
        if rt.policies.service(service) is None:
            raise click.ClickException(f"no service {service!r} in the policies")
        actor = officer_identity()
        rt.revoker.revoke_service(service, cutoff, actor, officer_approvals())
        rt.events.emit(
            LifecycleEvent(
                "tokens.revoke-service", actor, details={"service": service, "before": cutoff}
            )
        )
    click.echo(f"revoked: every token of {service} issued before {cutoff:.0f}")


@tokens.command("revoked")
def tokens_revoked() -> None:
    """List the revocations still in force."""
    with _vault() as rt:
        for r in rt.revoker.active():
            what = f"jti={r.jti}" if r.jti is not None else f"issued_before={r.issued_before:.0f}"
            click.echo(f"{r.service}\t{what}\tuntil={r.expires_at:.0f}\tby={r.actor}")


# -- audit ---------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Verify, export, sign and prune the audit chain (docs/audit.md)."""


def _pinned(path: Path | None) -> ec.EllipticCurvePublicKey | None:
    if path is None:
        return None
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise click.ClickException("the audit signing key is an EC P-256 key")
    return key


@audit.command("verify")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Verify an export instead of the database.",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The signing key to trust (PEM); default: the HSM's (or the export's).",
)
@click.option("--strict", is_flag=True, help="Records not yet signed count as a failure.")
def audit_verify(export_dir: Path | None, public_key: Path | None, strict: bool) -> None:
    """Check the chain; name every edited, deleted, inserted or reordered record or checkpoint."""
    from vault.audit import verify  # noqa: PLC0415
    from vault.audit.export import read_export  # noqa: PLC0415
    from vault.audit.keys import SIGNING_KEY  # noqa: PLC0415

    pinned = _pinned(public_key)
    if export_dir is not None:
        chain = read_export(export_dir, pinned)
        report = verify(chain.records(), chain.checkpoints, chain.keys, chain.head)
    else:
        with _vault() as rt:
            store = rt.audit.store
            if pinned is None:
                loaded = serialization.load_pem_public_key(rt.audit.keys.public_key_pem())
                assert isinstance(loaded, ec.EllipticCurvePublicKey)
                pinned = loaded
            report = verify(store.chain(), store.checkpoints(), {SIGNING_KEY: pinned}, store.head())
    for finding in report.findings:
        click.echo(str(finding))
    click.echo(
        f"{report.records} records ({report.first_seq} to {report.last_seq}), "
        f"{report.checkpoints} checkpoints, signed through {report.signed_through}: "
        + ("OK" if report.ok else "TAMPERED")
    )
    if not report.ok or (strict and report.findings):
        raise SystemExit(1)


@audit.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def audit_export(directory: Path) -> None:
    """Write the chain, its checkpoints and the signing key's public half to DIRECTORY."""
    from vault.audit.export import export  # noqa: PLC0415

    with _vault() as rt:
        done = export(rt.audit.store, rt.audit.keys.public_key_pem(), directory, time.time())
    click.echo(
        f"exported records {done.first_seq} to {done.last_seq} ({done.records}) and "
        f"{done.checkpoints} checkpoints to {directory}"
    )


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the chain's head now (the server does so every few seconds by itself)."""
    with _vault() as rt:
        seq = rt.audit.checkpoint_sync()
    click.echo(f"signed through record {seq}" if seq is not None else "nothing new to sign")


@audit.command("prune")
def audit_prune() -> None:
    """Remove records older than VAULT_AUDIT_RETENTION_DAYS, up to a signed checkpoint that
    stays as the anchor (the prune itself is recorded in the chain)."""
    with _vault() as rt:
        pruned = rt.audit.prune(officer_identity())
    if pruned is None:
        click.echo("nothing to prune")
    else:
        click.echo(f"pruned records up to {pruned.through} (the anchor); recorded as {pruned.seq}")


@audit.command("public-key")
def audit_public_key() -> None:
    """Print the audit signing key's public half (PEM), to pin for offline verification."""
    with _vault() as rt:
        click.echo(rt.audit.keys.public_key_pem().decode(), nl=False)
