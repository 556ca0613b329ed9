"""Offline verification of the audit chain: what was edited, deleted, inserted or reordered,
and where.

The verifier needs only the records, the checkpoints and the signing key's public half; it
runs over the database (``hsm-vault audit verify``) or over an export (``--export DIR``), and
trusts nothing it cannot check:

- each checkpoint's signature, and that it names the checkpoint before it (by number and by
  digest): a forged, edited, removed or reordered checkpoint shows;
- the records' numbers, one after the other: a removed record leaves a gap;
- each record's own number in its body: a record moved, or one inserted before it, shows;
- each record against its stored hash, chained from the one before (the database keeps
  both): an edited record shows at its own number;
- the chain recomputed from the bodies against each signed checkpoint: even records edited
  and re-hashed consistently cannot match a signature (the verifier re-synchronizes on each
  checkpoint, so one edit is reported once);
- the running counts per key and operation, the prune records and the anchor a pruned chain
  starts from, and the database's head row.

Records after the last checkpoint are reported as not yet signed (not as tampering: the next
checkpoint signs them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from vault.audit.records import ZERO_HASH, Checkpoint, decode_checkpoint, decode_record, link
from vault.store.audit import Head, StoredCheckpoint, StoredRecord

UNSIGNED = "unsigned"


@dataclass(frozen=True, slots=True)
class Finding:
    where: str  # "record", "checkpoint" or "chain"
    seq: int
    problem: str  # edited, deleted, inserted, reordered, signature, count, unsigned
    message: str

    @property
    def tampering(self) -> bool:
        return self.problem != UNSIGNED

    def __str__(self) -> str:
        return f"{self.where} {self.seq}: {self.problem}: {self.message}"


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    checkpoints: int = 0
    signed_through: int = 0

    @property
    def ok(self) -> bool:
        return not any(f.tampering for f in self.findings)


@dataclass(slots=True)
class _Signed:
    """The checkpoints whose signatures verified: record number → signed hash."""

    hashes: dict[int, bytes] = field(default_factory=dict)
    first_prev: int = 0  # ``prev_seq`` of the first trusted checkpoint
    first: int | None = None


def _signature_ok(public: ec.EllipticCurvePublicKey, body: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _checkpoints(
    stored: Sequence[StoredCheckpoint],
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    report: Report,
) -> _Signed:
    signed = _Signed()
    previous: tuple[int, bytes, bool] | None = None  # seq, body, trusted
    for cp in stored:
        report.checkpoints += 1

        def found(problem: str, message: str, seq: int = cp.seq) -> None:
            report.findings.append(Finding("checkpoint", seq, problem, message))

        try:
            body: Checkpoint = decode_checkpoint(cp.body)
        except msgspec.DecodeError:
            found("edited", "unreadable (edited)")
            previous = (cp.seq, cp.body, False)
            continue
        public = keys.get(body.key)
        trusted = public is not None and _signature_ok(public, cp.body, cp.signature)
        if public is None:
            found("signature", f"names an unknown signing key {body.key!r}")
        elif not trusted:
            found("signature", "its signature does not verify (edited or forged)")
        elif body.seq != cp.seq:
            found("reordered", f"holds the checkpoint signed for record {body.seq} (moved)")
            trusted = False
        if previous is not None and body.prev_seq != previous[0]:
            if body.prev_seq > previous[0]:
                found(
                    "deleted",
                    f"missing: checkpoint {cp.seq} was signed after it (deleted)",
                    body.prev_seq,
                )
            else:
                found(
                    "inserted",
                    f"does not belong between checkpoints {body.prev_seq} and {cp.seq} (inserted)",
                    previous[0],
                )
        elif (
            previous is not None
            and previous[2]
            and body.prev != hashlib.sha256(previous[1]).hexdigest()
        ):
            found("edited", f"checkpoint {cp.seq} signed another body for it (edited)", previous[0])
        if trusted:
            signed.hashes[body.seq] = bytes.fromhex(body.hash)
            if signed.first is None:
                signed.first, signed.first_prev = body.seq, body.prev_seq
        previous = (cp.seq, cp.body, trusted)
    return signed


def verify(
    records: Iterable[StoredRecord],
    checkpoints: Sequence[StoredCheckpoint],
    keys: Mapping[str, ec.EllipticCurvePublicKey],
    head: Head | None = None,
) -> Report:
    """Check the chain; ``records`` in the order of their numbers (as stored)."""
    report = Report()
    signed = _checkpoints(checkpoints, keys, report)
    found = report.findings

    expected: int | None = None
    stored_prev: bytes | None = None  # the previous record's stored hash
    chain: bytes | None = None  # the chain recomputed from the bodies (None: unknown)
    last_signed = 0
    counts: dict[tuple[str, str], int] = {}
    pruned_through: int | None = None
    placed = (0, 0)  # the previous record's (row number - own number, own number)
    for rec in records:
        report.records += 1
        if expected is None:
            report.first_seq = rec.seq
            if rec.seq == 1:
                chain = ZERO_HASH
            elif rec.seq - 1 in signed.hashes:  # a pruned chain starts at its signed anchor
                chain = signed.hashes[rec.seq - 1]
            else:
                found.append(
                    Finding(
                        "record",
                        1,
                        "deleted",
                        f"records 1 to {rec.seq - 1} are missing and no signed checkpoint "
                        f"anchors record {rec.seq}",
                    )
                )
            stored_prev = chain
        elif rec.seq != expected:
            found.append(
                Finding(
                    "record",
                    expected,
                    "deleted",
                    f"records {expected} to {rec.seq - 1} are missing (deleted)",
                )
            )
            stored_prev = chain = None
        try:
            body = decode_record(rec.body)
        except msgspec.DecodeError:
            found.append(Finding("record", rec.seq, "edited", "unreadable (edited)"))
            body = None
        if body is not None:
            place = _place(rec.seq, body.seq, placed)
            if place is not None:
                found.append(place)
            placed = (rec.seq - body.seq, body.seq)
        if (
            rec.hash is not None
            and stored_prev is not None
            and link(stored_prev, rec.body) != rec.hash
        ):
            found.append(
                Finding(
                    "record",
                    rec.seq,
                    "edited",
                    "does not match its stored hash chained from the record before it "
                    "(this record, or the stored hash before it, was changed)",
                )
            )
        if chain is not None:
            chain = link(chain, rec.body)
        if rec.seq in signed.hashes:
            if chain is not None and chain != signed.hashes[rec.seq]:
                found.append(
                    Finding(
                        "checkpoint",
                        rec.seq,
                        "edited",
                        f"records {last_signed + 1} to {rec.seq} do not match this signed "
                        "checkpoint (edited, inserted or removed, even if re-hashed)",
                    )
                )
            chain = signed.hashes[rec.seq]
            last_signed = rec.seq
        stored_prev = rec.hash if rec.hash is not None else chain
        if body is not None:
            pruned_through = _prune_mark(body, pruned_through)
            _count(body, counts, report, complete=report.first_seq == 1)
        expected = rec.seq + 1

    last = (expected or 1) - 1
    report.last_seq = last
    report.signed_through = last_signed
    for seq in sorted(signed.hashes):
        if seq > last:
            found.append(
                Finding(
                    "record",
                    last + 1,
                    "deleted",
                    f"records {last + 1} to {seq} are missing: checkpoint {seq} signed them",
                )
            )
            break
    _anchor(report, signed, pruned_through)
    if head is not None:
        _head(report, head, stored_prev)
    if last > last_signed and not any(s > last for s in signed.hashes):
        found.append(
            Finding(
                "chain",
                last_signed + 1,
                UNSIGNED,
                f"records {last_signed + 1} to {last} are not yet signed by a checkpoint",
            )
        )
    return report


def _place(seq: int, own: int, placed: tuple[int, int]) -> Finding | None:
    """A record whose body names another number is out of place. Reported where the shift
    starts (records after an insertion all move by one: that is one finding, not many)."""
    shift, previous = seq - own, placed[1]
    if shift == 0 or (shift == placed[0] and own == previous + 1):
        return None
    if own == previous:
        return Finding(
            "record",
            seq,
            "inserted",
            f"holds record {own} like the record before it: a record was inserted before it "
            "and the rest renumbered",
        )
    return Finding(
        "record",
        seq,
        "reordered",
        f"holds the body of record {own} (records reordered, or removed and the rest renumbered)",
    )


def _prune_mark(body: object, current: int | None) -> int | None:
    details = getattr(body, "details", None)
    if getattr(body, "event", None) == "audit.prune" and isinstance(details, dict):
        through = details.get("through")
        if isinstance(through, int):
            return through
    return current


def _count(
    body: object, counts: dict[tuple[str, str], int], report: Report, *, complete: bool
) -> None:
    """Each request record carries the running count for its key and operation."""
    key, operation, count = (getattr(body, n, None) for n in ("key", "operation", "count"))
    if count is None or key is None or operation is None:
        return
    pair = (str(key), str(operation))
    before = counts.get(pair)
    wanted = (before + 1) if before is not None else (1 if complete else None)
    if wanted is not None and count != wanted:
        report.findings.append(
            Finding(
                "record",
                int(getattr(body, "seq", 0)),
                "count",
                f"is request {count} for {key}/{operation} but {wanted} was due "
                "(records of this key and operation removed or inserted)",
            )
        )
    counts[pair] = int(count)


def _anchor(report: Report, signed: _Signed, pruned_through: int | None) -> None:
    """A chain that does not start at record 1 was pruned: the prune must be in the chain
    and start exactly where the records do; the first checkpoint may then follow a removed one."""
    first = report.first_seq
    found = report.findings
    if first > 1 and pruned_through != first - 1:
        found.append(
            Finding(
                "record",
                first,
                "deleted",
                f"the chain starts at record {first} but no prune record says records up to "
                f"{first - 1} were pruned (removed outside retention)",
            )
        )
    if signed.first is not None and signed.first_prev != 0 and signed.first != first - 1:
        found.append(
            Finding(
                "checkpoint",
                signed.first_prev,
                "deleted",
                f"missing: checkpoint {signed.first} was signed after it (deleted)",
            )
        )


def _head(report: Report, head: Head, last_hash: bytes | None) -> None:
    last = report.last_seq
    if head.seq > last:
        report.findings.append(
            Finding(
                "record",
                last + 1,
                "deleted",
                f"records {last + 1} to {head.seq} are missing: the chain's head is at {head.seq}",
            )
        )
    elif head.seq < last:
        report.findings.append(
            Finding(
                "record",
                head.seq + 1,
                "inserted",
                f"records {head.seq + 1} to {last} lie beyond the chain's head (inserted)",
            )
        )
    elif last_hash is not None and head.hash != last_hash:
        report.findings.append(
            Finding(
                "record",
                last,
                "edited",
                "the chain's head does not hold this record's hash (edited)",
            )
        )
