"""The audit export: what an auditor verifies without the vault (format in docs/audit.md).

    <dir>/manifest.json                  format, numbers, the head, which key is which file
    <dir>/records.jsonl                  one record per line, exactly the bytes hashed
    <dir>/checkpoints/<seq>.json         a checkpoint's body, exactly the bytes signed
    <dir>/checkpoints/<seq>.sig          its ECDSA P-256 / SHA-256 signature (DER)
    <dir>/keys/<name>.pem                the signing key's public half (SubjectPublicKeyInfo)

``<seq>`` is the record number a checkpoint covers, zero-padded to 12 digits so that the
files sort in chain order. A pruned chain's first checkpoint is its anchor: the record after
it is the first in ``records.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from vault.audit.keys import SIGNING_KEY
from vault.audit.records import timestamp
from vault.store.audit import AuditStore, Head, StoredCheckpoint, StoredRecord

FORMAT = "hsm-vault-audit-export/1"


@dataclass(frozen=True, slots=True)
class Exported:
    records: int
    checkpoints: int
    first_seq: int
    last_seq: int


def _name(seq: int) -> str:
    return f"{seq:012d}"


def export(store: AuditStore, public_pem: bytes, directory: Path, now: float) -> Exported:
    """Write the chain as it stands (up to its head when the export starts)."""
    head = store.head()
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    (directory / "keys").mkdir(exist_ok=True)
    (directory / "keys" / f"{SIGNING_KEY}.pem").write_bytes(public_pem)
    checkpoints = store.checkpoints(through=head.seq)
    for cp in checkpoints:
        (directory / "checkpoints" / f"{_name(cp.seq)}.json").write_bytes(cp.body)
        (directory / "checkpoints" / f"{_name(cp.seq)}.sig").write_bytes(cp.signature)
    count, first, last = 0, 0, 0
    with (directory / "records.jsonl").open("wb") as out:
        for rec in store.chain(head.seq):
            out.write(rec.body + b"\n")
            count += 1
            first = first or rec.seq
            last = rec.seq
    manifest = {
        "format": FORMAT,
        "exported_at": timestamp(now),
        "first_seq": first,
        "last_seq": last,
        "records": count,
        "checkpoints": len(checkpoints),
        "head": {"seq": head.seq, "hash": head.hash.hex()},
        "keys": {SIGNING_KEY: f"keys/{SIGNING_KEY}.pem"},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return Exported(count, len(checkpoints), first, last)


@dataclass(frozen=True, slots=True)
class ExportedChain:
    """An export read back, as the verifier takes it."""

    checkpoints: list[StoredCheckpoint]
    keys: dict[str, ec.EllipticCurvePublicKey]
    head: Head
    directory: Path

    def records(self) -> Iterator[StoredRecord]:
        first = json.loads((self.directory / "manifest.json").read_text())["first_seq"]
        with (self.directory / "records.jsonl").open("rb") as lines:
            for i, line in enumerate(lines):
                yield StoredRecord(first + i, line.rstrip(b"\n"), None)


def read_export(directory: Path, pinned: ec.EllipticCurvePublicKey | None = None) -> ExportedChain:
    """``pinned``: the signing key the auditor trusts (else the exported one)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"not an audit export of format {FORMAT}")
    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for name, path in manifest["keys"].items():
        key = pinned or serialization.load_pem_public_key((directory / path).read_bytes())
        if isinstance(key, ec.EllipticCurvePublicKey):
            keys[name] = key
    checkpoints = [
        StoredCheckpoint(int(body.stem), body.read_bytes(), body.with_suffix(".sig").read_bytes())
        for body in sorted((directory / "checkpoints").glob("*.json"))
    ]
    head = manifest["head"]
    return ExportedChain(
        checkpoints, keys, Head(head["seq"], bytes.fromhex(head["hash"])), directory
    )
