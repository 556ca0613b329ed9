"""``hsm-vault keys ...``: the key lifecycle, directly on the HSM and the database.

Every change names the officer making it (``--officer-key``) and is a lifecycle event;
deleting, trimming and lowering ``min_decryption_version`` also need an approval of two
officers (``--approval``, see ``hsm-vault approvals``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vault.cli._common import (
    approval_option,
    authority,
    domain_errors,
    dry_run_option,
    emit_json,
    json_option,
    officer_option,
    opened_vault,
    progress_bar,
)
from vault.cli._root import main
from vault.errors import BadRequest
from vault.keys import Key

if TYPE_CHECKING:
    from vault.runtime import Vault


@main.group()
def keys() -> None:
    """Manage keys directly on the HSM and the database (not through the API)."""


def _summary(key: Key) -> dict[str, Any]:
    return {
        "name": key.name,
        "type": key.type.name,
        "purpose": key.purpose.value,
        "latest_version": key.latest_version,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": key.min_encryption_version,
        "min_available_version": key.min_available_version,
        "auto_rotate_period": key.auto_rotate_period,
        "deletion_allowed": key.deletion_allowed,
    }


def _line(key: Key) -> str:
    return (
        f"{key.name}\t{key.type.name}\t{key.purpose.value}\tlatest=v{key.latest_version}"
        f"\tmin_decryption=v{key.min_decryption_version}"
        f"\tmin_encryption=v{key.min_encryption_version}"
        f"\tmin_available=v{key.min_available_version}"
        f"\tauto_rotate_period={key.auto_rotate_period}s"
        f"\tdeletion_allowed={str(key.deletion_allowed).lower()}"
    )


@keys.command("list")
@json_option
@domain_errors
def keys_list(as_json: bool) -> None:
    """List keys with their versions and configuration."""
    with opened_vault() as vault:
        for key in vault.registry.store.all_keys():
            if as_json:
                emit_json(_summary(key))
            else:
                click.echo(_line(key))


@keys.command("inventory")
@json_option
@domain_errors
def keys_inventory(as_json: bool) -> None:
    """Every key, every version and the HSM objects behind each (present or missing, their
    flags), the next automatic rotation, and objects no version names. Never key material."""
    from vault.reconcile import Reconciler, expected_ids  # noqa: PLC0415

    with opened_vault() as vault:
        reconciler = Reconciler(vault.registry)
        all_keys = vault.registry.store.all_keys()
        with progress_bar("reading the token", None):
            objects = reconciler.objects()
        by_id: dict[bytes, list[Any]] = {}
        for obj in objects:
            by_id.setdefault(obj.key_id, []).append(obj)
        named: set[bytes] = set()
        for key in all_keys:
            ids = expected_ids(key)
            named |= set(ids)
            entry = _summary(key)
            entry["next_rotation"] = _next_rotation(key)
            entry["versions"] = [
                {
                    "version": n,
                    "created_at": v.created_at,
                    "objects": [
                        {
                            "id": oid.hex(),
                            "label": o.label,
                            "class": o.object_class,
                            "sensitive": o.sensitive,
                            "extractable": o.extractable,
                        }
                        for oid, number in ids.items()
                        if number == n
                        for o in by_id.get(oid, [])
                    ],
                    "present": all(oid in by_id for oid, number in ids.items() if number == n),
                }
                for n, v in sorted(key.versions.items())
            ]
            _show(entry, as_json)
        unnamed = [o for o in objects if o.key_id not in named]
        _show(
            {
                "unnamed_objects": [
                    {"id": o.key_id.hex(), "label": o.label, "class": o.object_class}
                    for o in unnamed
                ]
            },
            as_json,
        )


def _next_rotation(key: Key) -> float | None:
    latest = key.versions.get(key.latest_version)
    if not key.auto_rotate_period or latest is None:
        return None
    return latest.created_at + key.auto_rotate_period


def _show(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(entry)
        return
    if "unnamed_objects" in entry:
        click.echo(f"objects no version names: {len(entry['unnamed_objects'])}")
        for o in entry["unnamed_objects"]:
            click.echo(f"  {o['label']} ({o['class']}, id {o['id']})")
        return
    click.echo(f"{entry['name']} ({entry['type']})")
    for v in entry["versions"]:
        state = "ok" if v["present"] else "MISSING"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v["created_at"]))
        click.echo(f"  v{v['version']}  {when}Z  objects={len(v['objects'])}  {state}")
    if entry["next_rotation"] is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["next_rotation"]))
        click.echo(f"  next automatic rotation: {when}Z")


@keys.command("create")
@click.argument("names", nargs=-1)
@click.option(
    "--file",
    "file_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The declarative file (default: the [keys] of $VAULT_POLICIES_DIR, policies/keys.toml).",
)
@click.option(
    "--type",
    "type_name",
    default=None,
    help="Create one undeclared key NAME of this type instead (prefer declaring it).",
)
@click.option(
    "--purpose", default=None, help="With --type: the one job the key is for (default: the type's)."
)
@officer_option
@dry_run_option
@domain_errors
def keys_create(
    names: tuple[str, ...],
    file_path: Path | None,
    type_name: str | None,
    purpose: str | None,
    officer_key: Path | None,
    dry_run: bool,
) -> None:
    """Create the keys declared in policies/keys.toml (all, or the NAMES given) and bring
    the configuration of existing ones in line with the file (auto_rotate_period,
    deletion_allowed). Idempotent: a second run changes nothing."""
    from vault.policy import DeclaredKey, load_declared_keys  # noqa: PLC0415

    with opened_vault() as vault:
        declared = load_declared_keys(file_path) if file_path else vault.policies.keys
        if type_name is not None:
            if len(names) != 1:
                raise click.UsageError("--type creates exactly one key NAME")
            declared = {names[0]: DeclaredKey(names[0], type_name, purpose=purpose)}
        unknown = [n for n in names if n not in declared]
        if unknown:
            raise click.ClickException(f"not declared: {', '.join(unknown)}")
        chosen = [declared[n] for n in (names or tuple(declared))]
        by = authority(vault, officer_key, dry_run=dry_run)
        conflicts = 0
        with progress_bar("keys", len(chosen)) as advance:
            for one in chosen:
                plan = (
                    vault.registry.plan_declared(one)
                    if dry_run
                    else vault.registry.apply_declared(one, by=by)
                )
                conflicts += plan.outcome == "conflict"
                click.echo(_plan_line(plan, dry_run))
                advance(1)
        if conflicts:
            raise click.ClickException(f"{conflicts} key(s) conflict with their declaration")


def _plan_line(plan: Any, dry_run: bool) -> str:
    verbs = {
        "create": ("would create", "created"),
        "configure": ("would configure", "configured"),
        "unchanged": ("unchanged", "unchanged"),
        "conflict": ("CONFLICT", "CONFLICT"),
    }
    verb = verbs[plan.outcome][0 if dry_run else 1]
    changes = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in plan.changes.items())
    if plan.outcome == "create":
        changes = str(plan.changes["type"][1])
    detail = plan.reason or changes
    return f"{verb}: {plan.name}" + (f" ({detail})" if detail else "")


@keys.command("rotate")
@click.argument("name")
@officer_option
@dry_run_option
@domain_errors
def keys_rotate(name: str, officer_key: Path | None, dry_run: bool) -> None:
    """Add a new version to key NAME and make it the one that encrypts (old versions keep
    decrypting; nothing stops serving)."""
    with opened_vault() as vault:
        key = vault.registry.get_sync(name)
        if dry_run:
            after = key.latest_version + 1
            click.echo(f"dry run: would rotate {name} from v{key.latest_version} to v{after}")
            return
        key = vault.registry.rotate_sync(name, by=authority(vault, officer_key), trigger="officer")
    click.echo(f"{name}: latest version is now v{key.latest_version}")


@keys.command("set-purpose")
@click.argument("name")
@click.argument("purpose")
@officer_option
@dry_run_option
@domain_errors
def keys_set_purpose(name: str, purpose: str, officer_key: Path | None, dry_run: bool) -> None:
    """Give key NAME another PURPOSE its type serves, with a new version made for it.

    For keys made before purposes existed (README, "Upgrading"): from now on the key is used
    for PURPOSE only, and its new version's HSM objects can do nothing else."""
    with opened_vault() as vault:
        key = vault.registry.get_sync(name)
        chosen = key.type.purpose(purpose)
        if dry_run:
            click.echo(
                f"dry run: would make {name} serve {chosen.value} from v{key.latest_version + 1}"
            )
            return
        key = vault.registry.rotate_sync(
            name, by=authority(vault, officer_key), trigger="set-purpose", purpose=purpose
        )
    click.echo(f"{name}: {key.purpose.value}, latest version is now v{key.latest_version}")


@keys.command("configure")
@click.argument("name")
@click.option("--min-decryption-version", type=int, help="Lowering it needs --approval.")
@click.option("--min-encryption-version", type=int)
@click.option("--auto-rotate-period", help="Seconds or a duration (24h, 30d); 0 is off.")
@click.option("--deletion-allowed/--deletion-forbidden", default=None)
@click.option("--exportable", is_flag=True, help="Refused: keys never leave the HSM.")
@approval_option
@officer_option
@dry_run_option
@domain_errors
def keys_configure(
    name: str,
    min_decryption_version: int | None,
    min_encryption_version: int | None,
    auto_rotate_period: str | None,
    deletion_allowed: bool | None,
    exportable: bool,
    approval: str | None,
    officer_key: Path | None,
    dry_run: bool,
) -> None:
    """Change key NAME's configuration (Vault's /keys/:name/config)."""
    if exportable:
        raise click.ClickException("keys in this vault are never exportable")
    period: int | str | None = auto_rotate_period
    if auto_rotate_period is not None and auto_rotate_period.isdigit():
        period = int(auto_rotate_period)
    with opened_vault() as vault:
        key = vault.registry.get_sync(name)
        changes = vault.registry.config_changes(
            key, min_decryption_version, min_encryption_version, deletion_allowed, period
        )
        if not changes:
            click.echo(f"{name}: nothing to change")
            return
        described = ", ".join(f"{k}: {getattr(key, k)} -> {v}" for k, v in sorted(changes.items()))
        lowering = changes.get("min_decryption_version", key.min_decryption_version) < (
            key.min_decryption_version
        )
        if dry_run:
            need = " (needs two officers' approval)" if lowering else ""
            click.echo(f"dry run: would configure {name}: {described}{need}")
            return
        vault.registry.configure_sync(
            name,
            min_decryption_version=min_decryption_version,
            min_encryption_version=min_encryption_version,
            deletion_allowed=deletion_allowed,
            auto_rotate_period=period,
            by=authority(vault, officer_key, approval),
        )
    click.echo(f"configured {name}: {described}")


@keys.command("trim")
@click.argument("name")
@click.option("--min-available-version", type=int, required=True, help="The new floor.")
@approval_option
@officer_option
@dry_run_option
@domain_errors
def keys_trim(
    name: str,
    min_available_version: int,
    approval: str | None,
    officer_key: Path | None,
    dry_run: bool,
) -> None:
    """Destroy key NAME's versions below --min-available-version, rows and HSM objects, for
    good. Refused while min_decryption_version (or min_encryption_version) still needs them;
    needs two officers' approval."""
    with opened_vault() as vault:
        by = authority(vault, officer_key, approval, dry_run=dry_run)
        _, versions = vault.registry.trim_sync(name, min_available_version, by=by, dry_run=dry_run)
    listed = ", ".join(f"v{n}" for n in versions) or "none"
    if dry_run:
        click.echo(
            f"dry run: would destroy versions {listed} of {name} (needs two officers' approval)"
        )
    else:
        click.echo(f"trimmed {name}: destroyed versions {listed}")


@keys.command("delete")
@click.argument("name")
@approval_option
@officer_option
@dry_run_option
@domain_errors
def keys_delete(name: str, approval: str | None, officer_key: Path | None, dry_run: bool) -> None:
    """Delete key NAME, all its versions and HSM objects, for good (only when
    deletion_allowed, and with two officers' approval)."""
    with opened_vault() as vault:
        by = authority(vault, officer_key, approval, dry_run=dry_run)
        key = vault.registry.delete_sync(name, by=by, dry_run=dry_run)
    if dry_run:
        click.echo(
            f"dry run: would delete {name} and its {len(key.versions)} version(s) "
            "(needs two officers' approval)"
        )
    else:
        click.echo(f"deleted {name} ({len(key.versions)} version(s))")


@keys.command("reconcile")
@click.option("--repair", is_flag=True, help="Fix what is found (see below).")
@click.option(
    "--grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait before destroying an orphan (a rotation may be committing it).",
)
@json_option
@officer_option
@dry_run_option
@domain_errors
def keys_reconcile(
    repair: bool, grace: float, as_json: bool, officer_key: Path | None, dry_run: bool
) -> None:
    """Compare the HSM's objects with the registry. Reports orphan objects (labelled
    vault:..., named by no version: a crash between creating an object and committing its
    version leaves one) and lost versions (no object: they answer 503). --repair destroys
    the orphans still unnamed after --grace seconds and forgets lost versions (replacing a
    lost latest version first). Exit status 3 when drift remains."""
    from vault.reconcile import Reconciler  # noqa: PLC0415

    with opened_vault() as vault:
        reconciler = Reconciler(vault.registry, grace=grace)
        with progress_bar("reconciling", None):
            report = reconciler.check()
            if repair and not dry_run and not report.clean:
                report = reconciler.repair(report, authority(vault, officer_key))
    _report(report, as_json, dry_run and repair)
    if not report.clean:
        raise SystemExit(3)


def _report(report: Any, as_json: bool, dry_run: bool) -> None:
    orphans = [
        {"id": o.key_id.hex(), "label": o.label, "class": o.object_class} for o in report.orphans
    ]
    lost = [{"key": v.key, "version": v.version} for v in report.lost]
    foreign = [{"id": o.key_id.hex(), "label": o.label} for o in report.foreign]
    if as_json:
        emit_json(
            {
                "keys": report.keys,
                "versions": report.versions,
                "objects": report.objects,
                "orphans": orphans,
                "lost_versions": lost,
                "foreign_objects": foreign,
                "repaired": report.repaired,
                "clean": report.clean,
            }
        )
        return
    for line in report.repaired:
        click.echo(f"repaired: {line}")
    click.echo(
        f"{report.keys} keys, {report.versions} versions, {report.objects} objects on the token"
    )
    for o in orphans:
        click.echo(f"orphan object (no version names it): {o['label']} id={o['id']}")
    for v in lost:
        click.echo(f"lost version (object missing, answers 503): {v['key']} v{v['version']}")
    for o in foreign:
        click.echo(f"not ours (left alone): {o['label']} id={o['id']}")
    if dry_run and not report.clean:
        click.echo("dry run: --repair would destroy the orphans and forget the lost versions")
    click.echo("in line" if report.clean else "drift found")


@keys.command("rewrap")
@click.argument("name")
@click.option("--in", "in_path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--field",
    "field_name",
    default="ciphertext",
    show_default=True,
    help="JSON lines: the ciphertext's field.",
)
@click.option("--database-url", help="A table's database (SQLAlchemy URL) instead of files.")
@click.option("--table")
@click.option("--column", help="The column holding the ciphertexts.")
@click.option("--id-column", default="id", show_default=True, help="A unique, ordered column.")
@click.option("--ad-column", help="The associated data (bytes, or base64 text), if any.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--rate", type=float, default=None, help="At most this many items a second.")
@dry_run_option
@domain_errors
def keys_rewrap(
    name: str,
    in_path: Path | None,
    out_path: Path | None,
    field_name: str,
    database_url: str | None,
    table: str | None,
    column: str | None,
    id_column: str,
    ad_column: str | None,
    batch_size: int,
    rate: float | None,
    dry_run: bool,
) -> None:
    """Rewrap stored ciphertexts of key NAME to its latest version, in batches: JSON lines
    (--in, --out: one output line per input line, in order; lines not rewrapped are copied
    unchanged) or a table (--database-url, --table, --column). Resumable: run it again after
    an interruption and it goes on where it stopped, losing nothing. Ends with a summary of
    rewrapped, skipped (already there) and failed items; exit status 1 if any failed."""
    from vault import rewrap  # noqa: PLC0415

    files = in_path is not None or out_path is not None
    table_mode = database_url is not None or table is not None or column is not None
    if files == table_mode or (files and not (in_path and out_path)):
        raise click.UsageError("give --in and --out, or --database-url, --table and --column")
    if table_mode and not (database_url and table and column):
        raise click.UsageError("a table needs --database-url, --table and --column")
    with opened_vault() as vault:
        rewrapper = _rewrapper(vault, name)
        if dry_run:
            click.echo(f"dry run: would rewrap {name}'s ciphertexts to v{rewrapper.target}")
            return
        if in_path is not None and out_path is not None:
            with in_path.open("rb") as counted:
                total = sum(1 for _ in counted)
            with progress_bar(f"rewrap {name}", total) as advance:
                summary = asyncio.run(
                    rewrap.rewrap_json_lines(
                        rewrapper,
                        in_path,
                        out_path,
                        field_name=field_name,
                        batch_size=batch_size,
                        rate=rate,
                        progress=advance,
                    )
                )
        else:
            from vault import store  # noqa: PLC0415

            assert database_url is not None
            assert table is not None
            assert column is not None
            engine = store.make_engine(database_url)
            try:
                source = rewrap.TableSource(engine, table, column, id_column, ad_column)
                with progress_bar(f"rewrap {name}", source.count()) as advance:
                    summary = asyncio.run(
                        rewrap.rewrap_table(
                            rewrapper, source, batch_size=batch_size, rate=rate, progress=advance
                        )
                    )
            finally:
                engine.dispose()
    _summary_out(summary)


def _rewrapper(vault: Vault, name: str) -> Any:
    from vault.otp.service import SEEDS_NOT_REWRAPPABLE  # noqa: PLC0415
    from vault.rewrap import Rewrapper  # noqa: PLC0415

    key = vault.registry.get_sync(name)
    if key.type.otp:
        raise BadRequest(SEEDS_NOT_REWRAPPABLE)
    if not key.type.encryption:
        raise BadRequest(f"key type {key.type.name} has no ciphertexts to rewrap")
    return Rewrapper(vault.transit, name, key.latest_version)


def _summary_out(summary: Any) -> None:
    if summary.resumed_after:
        click.echo(f"resumed after {summary.resumed_after} items done by an earlier run")
    for failure in summary.failures:
        click.echo(f"failed: {failure}", err=True)
    click.echo(
        f"rewrapped {summary.rewrapped}, skipped {summary.skipped}, failed {summary.failed} "
        f"(target v{summary.target_version})"
    )
    if summary.failed:
        raise SystemExit(1)
