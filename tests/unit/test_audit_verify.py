"""The verifier, property-tested on chains built in memory: an untouched chain verifies, and
every single edit, deletion, insertion or swap of records, and every change to a checkpoint,
is reported as tampering, at or before the first place the chain differs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.audit import Record, timestamp, verify
from vault.audit.records import ZERO_HASH, Checkpoint, encode, link
from vault.store.audit import Head, StoredCheckpoint, StoredRecord

KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {"k": KEY.public_key()}


def build(count: int, every: int) -> tuple[list[StoredRecord], list[StoredCheckpoint], Head]:
    records: list[StoredRecord] = []
    checkpoints: list[StoredCheckpoint] = []
    previous, last_cp = ZERO_HASH, None
    for seq in range(1, count + 1):
        body = encode(
            Record(seq=seq, at="t", type="request", key="k", operation="encrypt", count=seq)
        )
        previous = link(previous, body)
        records.append(StoredRecord(seq, body, previous))
        if seq % every == 0 or seq == count:
            cp = encode(
                Checkpoint(
                    seq=seq,
                    at="t",
                    hash=previous.hex(),
                    prev_seq=last_cp.seq if last_cp else 0,
                    prev=hashlib.sha256(last_cp.body).hexdigest() if last_cp else ZERO_HASH.hex(),
                    key="k",
                )
            )
            last_cp = StoredCheckpoint(seq, cp, KEY.sign(cp, ec.ECDSA(hashes.SHA256())))
            checkpoints.append(last_cp)
    return records, checkpoints, Head(count, previous)


chains = st.tuples(st.integers(2, 40), st.integers(1, 10))


@given(chains)
def test_an_untouched_chain_verifies(shape: tuple[int, int]) -> None:
    records, checkpoints, head = build(*shape)
    report = verify(records, checkpoints, KEYS, head)
    assert report.findings == []
    assert (report.first_seq, report.last_seq, report.signed_through) == (1, shape[0], shape[0])


def _edit(body: bytes) -> bytes:
    value = json.loads(body)
    value["operation"] = "decrypt"
    return json.dumps(value, separators=(",", ":")).encode()


@settings(max_examples=200)
@given(chains, st.data())
def test_any_single_tampering_is_found(shape: tuple[int, int], data: st.DataObject) -> None:
    records, checkpoints, head = build(*shape)
    kind = data.draw(
        st.sampled_from(["edit", "rehash", "delete", "swap", "insert", "cp-edit", "cp-delete"])
    )
    i = data.draw(st.integers(0, len(records) - 2))
    r = records[i]
    if kind == "edit":
        records[i] = StoredRecord(r.seq, _edit(r.body), r.hash)
    elif kind == "rehash":  # edited and every hash from there recomputed
        previous = records[i - 1].hash if i else ZERO_HASH
        assert previous is not None
        for j in range(i, len(records)):
            body = _edit(records[j].body) if j == i else records[j].body
            previous = link(previous, body)
            records[j] = StoredRecord(records[j].seq, body, previous)
        head = Head(head.seq, previous)
    elif kind == "delete":
        del records[i]
    elif kind == "swap":
        a, b = records[i], records[i + 1]
        records[i], records[i + 1] = (
            StoredRecord(a.seq, b.body, b.hash),
            StoredRecord(b.seq, a.body, a.hash),
        )
    elif kind == "insert":
        forged = encode(Record(seq=r.seq + 1, at="t", type="request", key="x", operation="x"))
        moved = [StoredRecord(x.seq + 1, x.body, x.hash) for x in records[i + 1 :]]
        records[i + 1 :] = [StoredRecord(r.seq + 1, forged, link(r.hash or b"", forged)), *moved]
    elif kind == "cp-edit":
        c = data.draw(st.integers(0, len(checkpoints) - 1))
        cp = checkpoints[c]
        checkpoints[c] = StoredCheckpoint(
            cp.seq, cp.body.replace(b'"at":"t"', b'"at":"u"'), cp.signature
        )
    else:
        if len(checkpoints) < 2:
            return
        del checkpoints[data.draw(st.integers(0, len(checkpoints) - 2))]
    report = verify(records, checkpoints, KEYS, head)
    assert not report.ok, (kind, i, report.findings)


def test_timestamps_are_rfc_3339_utc() -> None:
    for at in (0.0, 1_700_000_000.25, 1_700_000_000.999_999_4, 4_102_444_799.5):
        text = timestamp(at)
        parsed = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        assert abs(parsed.timestamp() - at) < 1e-5


def test_records_put_seq_first_and_count_last() -> None:
    """What PostgreSQL's audit_append relies on to write both into a body."""
    body = encode(Record(seq=7, at="t", type="request", key="k", count=3, findings=("x",)))
    assert body.startswith(b'{"seq":7,')
    assert body.endswith(b',"count":3}')
    without = encode(Record(at="t", type="request", key="k", findings=("x",)))
    assert b'{"seq":7,' + without[1:-1] + b',"count":3}' == body
    assert msgspec.json.decode(body)["count"] == 3
