"""The audit chain on SQLite and PostgreSQL with the real HSM key: records keep one order under
concurrency, checkpoints sign them, and every way of tampering with the tables directly is
found by ``verify`` and named where it happened; an export verifies with the stand-alone
script of docs/audit.md (and OpenSSL), and fails when tampered with."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from vault.audit import AuditChain, AuditKeys, AuditSettings, Record, Report, timestamp, verify
from vault.audit.export import export, read_export
from vault.audit.keys import SIGNING_KEY
from vault.audit.records import link
from vault.events import LifecycleEvent
from vault.store import Database
from vault.store.audit import AuditStore

pytestmark = pytest.mark.hsm
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chain(database_url: str, runtime) -> Iterator[AuditChain]:  # type: ignore[no-untyped-def]
    db = Database.open(database_url)
    made = AuditChain(
        AuditStore(db),
        AuditKeys(runtime.hsm),
        AuditSettings(checkpoint_records=10_000, checkpoint_seconds=3600),
    )
    yield made
    made.store.close()
    db.dispose()


def request(i: int, key: str = "k", operation: str = "encrypt") -> Record:
    return Record(
        at=timestamp(1_700_000_000 + i),
        type="request",
        request_id=f"req-{i}",
        service="svc",
        operation=operation,
        key=key,
        status=200,
    )


def fill(chain: AuditChain, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        chain.store.append([(request(i), 1_700_000_000.0 + i)])


def public_key(chain: AuditChain) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(chain.keys.public_key_pem())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def check(chain: AuditChain) -> Report:
    store = chain.store
    head = store.head()
    return verify(
        store.chain(),
        store.checkpoints(),
        {SIGNING_KEY: public_key(chain)},
        head,
    )


def problems(report: Report) -> set[tuple[str, int, str]]:
    return {(f.where, f.seq, f.problem) for f in report.findings if f.tampering}


def sql(chain: AuditChain, statement: str, **params: object) -> None:
    with chain.store.db.engine.begin() as conn:
        conn.execute(text(statement), params)


def row(chain: AuditChain, seq: int) -> tuple[str, bytes]:
    with chain.store.db.engine.connect() as conn:
        body, digest = conn.execute(
            text("SELECT body, hash FROM audit_records WHERE seq = :s"), {"s": seq}
        ).one()
    return body, bytes(digest)


@pytest.fixture
def signed(chain: AuditChain) -> AuditChain:
    """Thirty records under three checkpoints (10, 20, 30), five more not yet signed."""
    for start in (0, 10, 20):
        fill(chain, 10, start)
        assert chain.checkpoint_sync() == start + 10
    fill(chain, 5, 30)
    return chain


# -- a chain left alone verifies ------------------------------------------------------------


def test_an_untouched_chain_verifies(signed: AuditChain) -> None:
    report = check(signed)
    assert report.ok, report.findings
    assert (report.records, report.first_seq, report.last_seq) == (35, 1, 35)
    assert (report.checkpoints, report.signed_through) == (3, 30)
    # The tail waits for the next checkpoint: listed, not tampering.
    assert [(f.seq, f.problem) for f in report.findings] == [(31, "unsigned")]
    assert signed.checkpoint_sync() == 35
    assert check(signed).findings == []
    assert signed.checkpoint_sync() is None  # nothing new to sign


def test_records_carry_running_counts_per_key_and_operation(chain: AuditChain) -> None:
    chain.store.append([(request(i, "a", "encrypt"), 0.0) for i in range(3)])
    chain.store.append([(request(3, "b", "encrypt"), 0.0), (request(4, "a", "decrypt"), 0.0)])
    chain.store.append([(request(5, "a", "encrypt"), 0.0)])
    chain.emit(LifecycleEvent("key.rotate", "officer-1", "a", 2))
    bodies = [json.loads(r.body) for r in chain.store.chain(100)]
    assert [(b["seq"], b.get("key"), b.get("count")) for b in bodies] == [
        (1, "a", 1),
        (2, "a", 2),
        (3, "a", 3),
        (4, "b", 1),
        (5, "a", 1),
        (6, "a", 4),
        (7, "a", None),
    ]
    assert bodies[-1]["event"] == "key.rotate"
    assert bodies[-1]["actor"] == "officer-1"
    # A count that does not follow is found (here: one record of a/encrypt forged in place).
    body, _ = row(chain, 6)
    sql(
        chain,
        "UPDATE audit_records SET body = :b WHERE seq = 6",
        b=body.replace('"count":4', '"count":9'),
    )
    assert ("record", 6, "count") in problems(check(chain))


def test_concurrent_appends_keep_one_order_and_share_commits(chain: AuditChain) -> None:
    batches: list[int] = []

    class Seen:
        def flushed(self, records: int, seconds: float, ok: bool) -> None:
            batches.append(records)

        def checkpointed(self, ok: bool) -> None:
            pass

    chain.observer = Seen()

    async def many() -> None:
        await asyncio.gather(*(chain.append(request(i), float(i)) for i in range(300)))

    asyncio.run(many())
    seqs = [r.seq for r in chain.store.chain(1000)]
    assert seqs == list(range(1, 301))
    assert sum(batches) == 300
    assert len(batches) < 300
    assert chain.checkpoint_sync() == 300
    assert check(chain).findings == []


def test_a_record_queued_as_a_flush_ends_is_not_left_behind(chain: AuditChain) -> None:
    """The request that arrives just after the last flush looked at the queue (its waiter
    resumes before the flusher's task is reaped) is committed without any later request."""

    async def one_after_another() -> None:
        await chain.append(request(1), 1.0)
        async with asyncio.timeout(3):  # in this task, at once (wait_for would start a new one)
            await chain.append(request(2), 2.0)

    asyncio.run(one_after_another())
    assert chain.store.head().seq == 2


def test_a_failed_commit_fails_every_request_in_it(chain: AuditChain) -> None:
    sql(chain, "DROP TABLE audit_counts")

    async def two() -> list[BaseException | None]:
        return await asyncio.gather(
            chain.append(request(1), 1.0), chain.append(request(2), 2.0), return_exceptions=True
        )

    outcomes = asyncio.run(two())
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    assert chain.store.head().seq == 0  # nothing half-written


# -- tampering, each kind found where it happened -------------------------------------------


def test_an_edited_record(signed: AuditChain) -> None:
    body, _ = row(signed, 7)
    sql(signed, "UPDATE audit_records SET body = :b WHERE seq = 7", b=body.replace("svc", "eve"))
    found = problems(check(signed))
    assert ("record", 7, "edited") in found
    assert ("checkpoint", 10, "edited") in found  # the signature over records 1..10
    assert not any(seq > 10 for _, seq, _ in found)  # one edit, reported once


def test_an_edited_and_rehashed_tail(signed: AuditChain) -> None:
    """The strongest forger re-hashes everything after the edit: the signature still shows."""
    body, _ = row(signed, 12)
    sql(signed, "UPDATE audit_records SET body = :b WHERE seq = 12", b=body.replace("200", "403"))
    previous = row(signed, 11)[1]
    for seq in range(12, 36):
        body, _ = row(signed, seq)
        previous = link(previous, body.encode())
        sql(signed, "UPDATE audit_records SET hash = :h WHERE seq = :s", h=previous, s=seq)
    sql(signed, "UPDATE audit_head SET hash = :h WHERE id = 1", h=previous)
    found = problems(check(signed))
    assert ("checkpoint", 20, "edited") in found


def test_a_deleted_record(signed: AuditChain) -> None:
    sql(signed, "DELETE FROM audit_records WHERE seq = 15")
    found = problems(check(signed))
    assert ("record", 15, "deleted") in found
    assert ("record", 16, "count") in found  # the running count skips one too


def test_deleted_last_records(signed: AuditChain) -> None:
    sql(signed, "DELETE FROM audit_records WHERE seq > 33")
    assert ("record", 34, "deleted") in problems(check(signed))  # the head row says 35


def test_a_record_inserted_and_the_rest_renumbered(signed: AuditChain) -> None:
    # Make room after record 12 (two steps: a unique key checks each row as it moves).
    sql(signed, "UPDATE audit_records SET seq = seq + 1000000 WHERE seq > 12")
    sql(signed, "UPDATE audit_records SET seq = seq - 999999 WHERE seq > 1000000")
    forged = request(999).__class__(
        seq=13, at=timestamp(1), type="request", request_id="forged", service="svc", status=200
    )
    from vault.audit.records import encode

    body = encode(forged)
    sql(
        signed,
        "INSERT INTO audit_records (seq, at, body, hash) VALUES (13, 1.0, :b, :h)",
        b=body.decode(),
        h=link(row(signed, 12)[1], body),
    )
    found = problems(check(signed))
    assert ("record", 14, "inserted") in found
    assert ("checkpoint", 20, "edited") in found


def test_a_record_appended_behind_the_head(signed: AuditChain) -> None:
    body = b'{"seq":36,"at":"x","type":"request","request_id":"forged"}'
    sql(
        signed,
        "INSERT INTO audit_records (seq, at, body, hash) VALUES (36, 1.0, :b, :h)",
        b=body.decode(),
        h=link(row(signed, 35)[1], body),
    )
    assert ("record", 36, "inserted") in problems(check(signed))


def test_records_reordered(signed: AuditChain) -> None:
    (b4, h4), (b5, h5) = row(signed, 4), row(signed, 5)
    sql(signed, "UPDATE audit_records SET body = :b, hash = :h WHERE seq = 4", b=b5, h=h5)
    sql(signed, "UPDATE audit_records SET body = :b, hash = :h WHERE seq = 5", b=b4, h=h4)
    found = problems(check(signed))
    assert ("record", 4, "reordered") in found
    assert ("record", 5, "reordered") in found


def test_the_oldest_records_removed(signed: AuditChain) -> None:
    sql(signed, "DELETE FROM audit_records WHERE seq <= 10")  # at a checkpoint, like a prune
    assert ("record", 11, "deleted") in problems(check(signed))  # but no prune record says so
    sql(signed, "DELETE FROM audit_checkpoints WHERE seq <= 10")
    assert ("record", 1, "deleted") in problems(check(signed))


def test_an_edited_checkpoint(signed: AuditChain) -> None:
    with signed.store.db.engine.connect() as conn:
        body = conn.execute(text("SELECT body FROM audit_checkpoints WHERE seq = 20")).scalar_one()
    sql(
        signed,
        "UPDATE audit_checkpoints SET body = :b WHERE seq = 20",
        b=body.replace('"prev_seq":10', '"prev_seq":11'),
    )
    assert ("checkpoint", 20, "signature") in problems(check(signed))


def test_a_deleted_checkpoint(signed: AuditChain) -> None:
    sql(signed, "DELETE FROM audit_checkpoints WHERE seq = 20")
    assert ("checkpoint", 20, "deleted") in problems(check(signed))


def test_a_forged_checkpoint(signed: AuditChain) -> None:
    fake = hashlib.sha256(b"x").hexdigest()
    body = json.dumps(
        {"seq": 25, "at": "x", "hash": fake, "prev_seq": 20, "prev": fake, "key": SIGNING_KEY}
    )
    sql(
        signed,
        "INSERT INTO audit_checkpoints (seq, prev_seq, at, body, signature) "
        "VALUES (25, 21, 1.0, :b, :s)",
        b=body,
        s=b"\x30\x06\x02\x01\x01\x02\x01\x01",
    )
    found = problems(check(signed))
    assert ("checkpoint", 25, "signature") in found
    assert ("checkpoint", 25, "inserted") in found


def test_checkpoints_reordered(signed: AuditChain) -> None:
    with signed.store.db.engine.connect() as conn:
        rows = dict(
            conn.execute(
                text("SELECT seq, body FROM audit_checkpoints WHERE seq IN (10, 20)")
            ).all()
        )
        sigs = dict(
            conn.execute(
                text("SELECT seq, signature FROM audit_checkpoints WHERE seq IN (10, 20)")
            ).all()
        )
    for mine, theirs in ((10, 20), (20, 10)):
        sql(
            signed,
            "UPDATE audit_checkpoints SET body = :b, signature = :s WHERE seq = :q",
            b=rows[theirs],
            s=bytes(sigs[theirs]),
            q=mine,
        )
    found = problems(check(signed))
    assert ("checkpoint", 10, "reordered") in found
    assert ("checkpoint", 20, "reordered") in found


# -- retention ------------------------------------------------------------------------------


def test_pruning_leaves_a_signed_anchor(chain: AuditChain) -> None:
    day = 86400.0
    now = 1_800_000_000.0
    chain._clock = lambda: now - 400 * day
    fill(chain, 10)
    assert chain.checkpoint_sync() == 10
    fill(chain, 10, 10)
    assert chain.checkpoint_sync() == 20
    chain._clock = lambda: now
    fill(chain, 5, 20)
    assert chain.checkpoint_sync() == 25
    pruned = chain.prune("officer-1", now=now)
    assert pruned is not None
    assert (pruned.through, pruned.seq) == (20, 26)
    assert chain.store.first_seq() == 21
    assert chain.checkpoint_sync() == 26
    report = check(chain)
    assert report.findings == [], report.findings
    assert report.first_seq == 21
    assert chain.prune("officer-1", now=now) is None  # nothing older left
    # Removing more than the prune did shows.
    sql(chain, "DELETE FROM audit_records WHERE seq <= 22")
    assert ("record", 23, "deleted") in problems(check(chain))


# -- the export and its stand-alone verification --------------------------------------------


def documented_script(tmp_path: Path) -> Path:
    doc = (ROOT / "docs" / "audit.md").read_text()
    block = re.search(
        r"<!-- verify_audit.py: begin -->\n```python\n(.*?)```\n<!-- verify_audit.py: end -->",
        doc,
        re.S,
    )
    assert block is not None, "docs/audit.md lost its script"
    script = tmp_path / "verify_audit.py"
    script.write_text(block[1])
    return script


def run_script(script: Path, export_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), str(export_dir), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_an_export_verifies_offline_and_tampering_does_not(
    signed: AuditChain, tmp_path: Path
) -> None:
    assert signed.checkpoint_sync() == 35
    out = tmp_path / "export"
    done = export(signed.store, signed.keys.public_key_pem(), out, 0.0)
    assert (done.records, done.checkpoints, done.first_seq, done.last_seq) == (35, 4, 1, 35)
    script = documented_script(tmp_path)
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes(signed.keys.public_key_pem())

    ran = run_script(script, out, str(pinned))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().endswith("OK")
    exported = read_export(out)
    assert (
        verify(exported.records(), exported.checkpoints, exported.keys, exported.head).findings
        == []
    )

    if shutil.which("openssl"):
        for body in sorted((out / "checkpoints").glob("*.json")):
            checked = subprocess.run(
                [
                    "openssl",
                    "dgst",
                    "-sha256",
                    "-verify",
                    str(out / "keys" / f"{SIGNING_KEY}.pem"),
                    "-signature",
                    str(body.with_suffix(".sig")),
                    str(body),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert checked.returncode == 0, checked
            assert "Verified OK" in checked.stdout

    # One record edited in the export: the script and the vault's verifier both say where.
    lines = (out / "records.jsonl").read_bytes().splitlines(keepends=True)
    lines[16] = lines[16].replace(b"svc", b"eve")
    (out / "records.jsonl").write_bytes(b"".join(lines))
    ran = run_script(script, out, str(pinned))
    assert ran.returncode == 1
    assert "records up to 20 do not match checkpoint 20" in ran.stdout
    exported = read_export(out)
    report = verify(exported.records(), exported.checkpoints, exported.keys, exported.head)
    assert ("checkpoint", 20, "edited") in problems(report)

    # A key other than the pinned one: nothing verifies.
    other = tmp_path / "other.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ran = run_script(script, out, str(other))
    assert ran.returncode == 1
    assert "checkpoint 10: the signature does not verify" in ran.stdout


def test_two_processes_checkpointing_at_once_extend_the_chain_once(
    chain: AuditChain, runtime
) -> None:  # type: ignore[no-untyped-def]
    other = AuditChain(chain.store, AuditKeys(runtime.hsm))
    fill(chain, 5)

    async def both() -> list[int | None]:
        return list(await asyncio.gather(chain.checkpoint(), other.checkpoint()))

    outcomes = asyncio.run(both())
    assert sorted(outcomes, key=lambda o: o or 0) == [None, 5]
    assert len(chain.store.checkpoints()) == 1
    assert check(chain).findings == []


def test_a_commit_that_never_ends_fails_the_request_closed(
    chain: AuditChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request hangs on its record: past twice the database's time limit it fails with
    StoreUnavailable (the gate's 503), and a later record commits once the store answers."""
    from vault.errors import StoreUnavailable

    monkeypatch.setattr(chain.store.db, "timeout", 0.1)
    stuck = asyncio.Event()

    async def never(drafts):  # type: ignore[no-untyped-def]
        await stuck.wait()

    async def scenario() -> float:
        with monkeypatch.context() as m:
            m.setattr(type(chain.store), "writes_now", property(lambda self: False))
            m.setattr(chain.store, "append_async", never)
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreUnavailable):
                await chain.append(request(1), 1.0)
            waited = asyncio.get_running_loop().time() - started
            stuck.set()
            await asyncio.sleep(0)
        await chain.append(request(2), 2.0)
        return waited

    waited = asyncio.run(scenario())
    assert 0.15 <= waited < 1.0
    assert chain.store.head().seq == 1
