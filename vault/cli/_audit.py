"""``hsm-vault audit ...``: verify, export, sign and prune the audit chain (docs/audit.md).
Verifying an export needs nothing but the export and, to pin it, the signing key's public half."""

from __future__ import annotations

import time
from pathlib import Path

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vault.cli._common import (
    authority,
    domain_errors,
    dry_run_option,
    officer_option,
    opened_vault,
)
from vault.cli._root import main


@main.group()
def audit() -> None:
    """Verify, export, sign and prune the audit chain (docs/audit.md)."""


def _ec_public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise click.ClickException("the audit signing key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise click.ClickException("the audit signing key is an EC P-256 key")
    return key


@audit.command("verify")
@click.option(
    "--export",
    "export_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Verify an export instead of the database (offline: no HSM, no database).",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The signing key to trust (PEM); default: the HSM's (or the export's).",
)
@click.option("--strict", is_flag=True, help="Records not yet signed count as a failure.")
@domain_errors
def audit_verify(export_dir: Path | None, public_key: Path | None, strict: bool) -> None:
    """Check the chain; name every edited, deleted, inserted or reordered record or checkpoint."""
    from vault.audit import verify  # noqa: PLC0415
    from vault.audit.export import read_export  # noqa: PLC0415
    from vault.audit.keys import SIGNING_KEY  # noqa: PLC0415

    pinned = _ec_public_key(public_key.read_bytes()) if public_key is not None else None
    if export_dir is not None:
        chain = read_export(export_dir, pinned)
        report = verify(chain.records(), chain.checkpoints, chain.keys, chain.head)
    else:
        with opened_vault() as vault:
            store = vault.audit.store
            if pinned is None:
                pinned = _ec_public_key(vault.audit.keys.public_key_pem())
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
@domain_errors
def audit_export(directory: Path) -> None:
    """Write the chain, its checkpoints and the signing key's public half to DIRECTORY."""
    from vault.audit.export import export  # noqa: PLC0415

    with opened_vault() as vault:
        done = export(vault.audit.store, vault.audit.keys.public_key_pem(), directory, time.time())
    click.echo(
        f"exported records {done.first_seq} to {done.last_seq} ({done.records}) and "
        f"{done.checkpoints} checkpoints to {directory}"
    )


@audit.command("checkpoint")
@domain_errors
def audit_checkpoint() -> None:
    """Sign the chain's head now (the server does so every few seconds by itself)."""
    with opened_vault() as vault:
        seq = vault.audit.checkpoint_sync()
    click.echo(f"signed through record {seq}" if seq is not None else "nothing new to sign")


@audit.command("prune")
@officer_option
@dry_run_option
@domain_errors
def audit_prune(officer_key: Path | None, dry_run: bool) -> None:
    """Remove records older than VAULT_AUDIT_RETENTION_DAYS, up to a signed checkpoint that
    stays as the anchor (the prune itself is recorded in the chain)."""
    with opened_vault() as vault:
        by = authority(vault, officer_key, dry_run=dry_run)
        pruned = vault.audit.prune(by.actor, dry_run=dry_run)
    if pruned is None:
        click.echo("nothing to prune")
    elif pruned.seq is None:
        click.echo(f"would prune records up to {pruned.through} (the anchor)")
    else:
        click.echo(f"pruned records up to {pruned.through} (the anchor); recorded as {pruned.seq}")


@audit.command("public-key")
@domain_errors
def audit_public_key() -> None:
    """Print the audit signing key's public half (PEM), to pin for offline verification."""
    with opened_vault() as vault:
        click.echo(vault.audit.keys.public_key_pem().decode(), nl=False)
