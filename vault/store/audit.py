"""The audit chain's tables: append in one global order, checkpoints, reads, pruning.

Appending a batch is one transaction that starts by moving the head row (``UPDATE ...
RETURNING``): that takes PostgreSQL's row lock (SQLite's write lock) at once, so batches from
every process and replica queue up there and the chain has one order. The batch's running
counts, its records and the new head follow in the same transaction; nothing else is done
while the lock is held.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import BindParameter, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from vault.audit.records import Record, encode, link
from vault.store import Database, Prepared
from vault.store.tables import audit_checkpoints, audit_counts, audit_head, audit_records
from vault.store.writer import Busy, SqliteWriter


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    body: bytes
    hash: bytes | None  # None where only the bodies are known (an export)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    seq: int
    body: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: bytes


Draft = tuple[Record, float]  # a record without its place yet, and its time (epoch seconds)


class AuditStore:
    """Synchronous statements (the caller picks the thread); ``StoreUnavailable`` on failure."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._writer = SqliteWriter(db) if db.dialect == "sqlite" else None
        engine = db.engine
        head, counts = audit_head.c, audit_counts.c
        # The append's statements, compiled once (they run for every batch of requests).
        self._take = Prepared(
            update(audit_head)
            .where(head.id == 1)
            .values(seq=head.seq + bindparam("b_n"))
            .returning(head.seq, head.hash),
            engine,
        )
        count = db.upsert(audit_counts).values(
            key=bindparam("b_key"), operation=bindparam("b_op"), count=bindparam("b_n")
        )
        self._count = Prepared(
            count.on_conflict_do_update(
                index_elements=[counts.key, counts.operation],
                set_={"count": counts.count + count.excluded.count},
            ).returning(counts.count),
            engine,
        )
        self._insert = Prepared(
            insert(audit_records).values(
                seq=bindparam("b_seq"),
                at=bindparam("b_at"),
                body=bindparam("b_body"),
                hash=bindparam("b_hash"),
            ),
            engine,
        )
        self._move = Prepared(
            update(audit_head).where(head.id == 1).values(hash=bindparam("b_hash")), engine
        )
        through: BindParameter[int] = bindparam("b_through")
        self._prune = (
            Prepared(delete(audit_records).where(audit_records.c.seq <= through), engine),
            Prepared(delete(audit_checkpoints).where(audit_checkpoints.c.seq < through), engine),
        )

    def append(self, drafts: Sequence[Draft], prune_through: int | None = None) -> int:
        """Give ``drafts`` the next sequence numbers, chain and store them; the last number.
        ``prune_through``: first delete records up to it (and checkpoints before it)."""

        def body(cur: Any) -> int:
            return self._append(cur, drafts, prune_through)

        if self._writer is not None:
            return self._writer.run(body)
        return self.db.raw_transaction(body)

    def append_now(self, drafts: Sequence[Draft]) -> int | None:
        """``append`` in the caller's thread if that means no waiting (a local SQLite file
        whose lock is free: cheaper than a thread hop); else ``None``."""
        if self._writer is None:
            return None
        try:
            return self._writer.try_run(lambda cur: self._append(cur, drafts, None))
        except Busy:
            return None

    def _append(self, cur: Any, drafts: Sequence[Draft], prune_through: int | None) -> int:
        n = len(drafts)
        cur.execute(self._take.sql, self._take.params({"b_n": n}))
        end, previous = cur.fetchone()
        if prune_through is not None:
            for prune in self._prune:
                cur.execute(prune.sql, prune.params({"b_through": prune_through}))
        counts = self._counts(cur, drafts)
        previous = bytes(previous)
        rows = []
        for i, (draft, at) in enumerate(drafts):
            pair = (draft.key, draft.operation)
            count = None
            if pair in counts:
                counts[pair] += 1
                count = counts[pair]
            seq = end - n + 1 + i
            body = encode(msgspec.structs.replace(draft, seq=seq, count=count))
            previous = link(previous, body)
            rows.append(
                self._insert.params(
                    {"b_seq": seq, "b_at": at, "b_body": body.decode(), "b_hash": previous}
                )
            )
        cur.executemany(self._insert.sql, rows)
        cur.execute(self._move.sql, self._move.params({"b_hash": previous}))
        return int(end)

    def _counts(self, cur: Any, drafts: Sequence[Draft]) -> dict[tuple[str, str], int]:
        """Add the batch's requests to the running counts; per key and operation, the count
        before the batch."""
        added: dict[tuple[str, str], int] = {}
        for draft, _ in drafts:
            if draft.type == "request" and draft.key is not None and draft.operation is not None:
                pair = (draft.key, draft.operation)
                added[pair] = added.get(pair, 0) + 1
        before = {}
        for (key, operation), n in sorted(added.items()):
            cur.execute(
                self._count.sql, self._count.params({"b_key": key, "b_op": operation, "b_n": n})
            )
            before[(key, operation)] = int(cur.fetchone()[0]) - n
        return before

    def head(self) -> Head:
        def query() -> Head:
            with self.db.engine.connect() as conn:
                seq, digest = conn.execute(
                    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
                ).one()
            return Head(int(seq), bytes(digest))

        return self.db.run_sync(query)

    def last_checkpoint(self) -> StoredCheckpoint | None:
        found = self.checkpoints(newest_first=True, limit=1)
        return found[0] if found else None

    def checkpoints(
        self, *, through: int | None = None, newest_first: bool = False, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        c = audit_checkpoints.c

        def query() -> list[StoredCheckpoint]:
            stmt = select(c.seq, c.body, c.signature)
            if through is not None:
                stmt = stmt.where(c.seq <= through)
            stmt = stmt.order_by(c.seq.desc() if newest_first else c.seq).limit(limit)
            with self.db.engine.connect() as conn:
                return [
                    StoredCheckpoint(int(s), b.encode(), bytes(sig))
                    for s, b, sig in conn.execute(stmt)
                ]

        return self.db.run_sync(query)

    def anchor_before(self, at: float) -> StoredCheckpoint | None:
        """The newest checkpoint signed before ``at`` (where pruning may cut the chain)."""
        c = audit_checkpoints.c

        def query() -> StoredCheckpoint | None:
            with self.db.engine.connect() as conn:
                row = conn.execute(
                    select(c.seq, c.body, c.signature)
                    .where(c.at < at)
                    .order_by(c.seq.desc())
                    .limit(1)
                ).first()
            return None if row is None else StoredCheckpoint(int(row[0]), row[1].encode(), row[2])

        return self.db.run_sync(query)

    def add_checkpoint(
        self, seq: int, prev_seq: int, at: float, body: bytes, signature: bytes
    ) -> bool:
        """``False`` if another process extended the same checkpoint first."""

        def write() -> bool:
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(
                        insert(audit_checkpoints).values(
                            seq=seq,
                            prev_seq=prev_seq,
                            at=at,
                            body=body.decode(),
                            signature=signature,
                        )
                    )
            except IntegrityError:
                return False
            return True

        return self.db.run_sync(write)

    def records(
        self, after: int = 0, limit: int = 10_000, through: int | None = None
    ) -> list[StoredRecord]:
        r = audit_records.c

        def query() -> list[StoredRecord]:
            stmt = select(r.seq, r.body, r.hash).where(r.seq > after)
            if through is not None:
                stmt = stmt.where(r.seq <= through)
            with self.db.engine.connect() as conn:
                return [
                    StoredRecord(int(s), b.encode(), bytes(h))
                    for s, b, h in conn.execute(stmt.order_by(r.seq).limit(limit))
                ]

        return self.db.run_sync(query)

    def chain(self, through: int | None = None, page: int = 10_000) -> Iterator[StoredRecord]:
        """Every record (up to ``through``), in order, read a page at a time."""
        after = 0
        while found := self.records(after, page, through=through):
            yield from found
            after = found[-1].seq

    def first_seq(self) -> int | None:
        def query() -> int | None:
            with self.db.engine.connect() as conn:
                found = conn.execute(
                    select(audit_records.c.seq).order_by(audit_records.c.seq).limit(1)
                ).scalar()
            return None if found is None else int(found)

        return self.db.run_sync(query)
