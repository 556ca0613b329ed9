"""The audit chain's tables: append in one global order, checkpoints, reads, pruning.

Appending a batch is one transaction that starts by moving the head row (``UPDATE ...
RETURNING``): that takes PostgreSQL's row lock (SQLite's write lock) at once, so batches from
every process and replica queue up there and the chain has one order. The batch's running
counts, its records and the new head follow in the same transaction.

Whatever happens while that lock is held delays every replica, so the lock is held for as
little as possible:

- PostgreSQL: the whole append is one call of the function ``audit_append`` (migration
  0006), one round trip in autocommit, made from the event loop (``vault.store.aio``): the
  lock is held by the server for the statements and the commit, never across a client round
  trip. The function numbers each body (``{"seq":N,`` in front), adds the running count
  (``,"count":N}`` at the end: ``Record`` puts those two members first and last) and chains
  the hashes with PostgreSQL's own SHA-256.
- SQLite: the same in Python, statements compiled once, on a DB-API connection; writers of
  every process take turns on a file lock (``vault.store.writer``), and the event loop writes
  at once when nobody is in the way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import BindParameter, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from vault.audit.records import Record, encode, link
from vault.store import Database, Prepared
from vault.store.aio import LoopConnections
from vault.store.tables import audit_checkpoints, audit_counts, audit_head, audit_records
from vault.store.writer import SqliteWriter


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


# One round trip: the batch's bodies (without seq and count), times, and key and operation
# of each request record (NULL otherwise), and how far to prune first (NULL: not at all).
# The arrays go in binary (``%(...)b``): psycopg's text form of an array quotes every JSON
# body character by character, which cost more than the whole call.
_APPEND_PG = (
    "SELECT audit_append(%(bodies)b::text[], %(ats)b::float8[], %(keys)b::text[], "
    "%(operations)b::text[], %(prune_through)s::bigint)"
)


# PostgreSQL appends in flight per process: one waits for the disk while the next is written.
_PG_APPENDS = 2


def _pg_params(drafts: Sequence[Draft], prune_through: int | None) -> dict[str, Any]:
    counted = [
        d.type == "request" and d.key is not None and d.operation is not None for d, _ in drafts
    ]
    return {
        "bodies": [encode(d).decode() for d, _ in drafts],  # seq 0 and count None: left out
        "ats": [at for _, at in drafts],
        "keys": [d.key if c else None for (d, _), c in zip(drafts, counted, strict=True)],
        "operations": [
            d.operation if c else None for (d, _), c in zip(drafts, counted, strict=True)
        ],
        "prune_through": prune_through,
    }


def _first(cursor: Any, sql: str, params: Any) -> int:
    cursor.execute(sql, params)
    return int(cursor.fetchone()[0])


class AuditStore:
    """Synchronous statements (the caller picks the thread); ``StoreUnavailable`` on failure."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._writer = SqliteWriter.of(db) if db.dialect == "sqlite" else None
        self._loop_connection = (
            LoopConnections(db, _PG_APPENDS) if db.dialect == "postgresql" else None
        )
        engine = db.engine
        # SQLite's append, compiled once (it runs for every batch of requests).
        head, counts = audit_head.c, audit_counts.c
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
        if self._writer is None:
            params = _pg_params(drafts, prune_through)
            return self.db.raw_transaction(lambda cursor: _first(cursor, _APPEND_PG, params))
        return self._writer.run(lambda cursor: self._append(cursor, drafts, prune_through))

    async def append_async(self, drafts: Sequence[Draft]) -> int:
        """``append`` for the event loop: PostgreSQL over the connection the loop awaits (no
        thread hop at all), SQLite on a worker thread (see ``append_soon`` first)."""
        if self._loop_connection is not None:
            (last,) = await self._loop_connection.call(_APPEND_PG, _pg_params(drafts, None))
            return int(last)
        return await self.db.run(functools.partial(self.append, drafts))

    @property
    def writes_now(self) -> bool:
        """Whether ``append_soon`` can work (a local SQLite file)."""
        return self._writer is not None

    async def append_soon(self, drafts: Callable[[], Sequence[Draft]]) -> int:
        """SQLite's append for the event loop (``writes_now``), through the writer's
        ``run_async``: on the loop when nobody else is writing (cheaper than a thread hop).
        ``drafts()`` is asked anew at each try: a batch that waits takes in what was queued
        meanwhile."""
        assert self._writer is not None

        def body() -> Callable[[Any], int]:
            batch = drafts()
            return lambda cursor: self._append(cursor, batch, None)

        return await self._writer.run_async(body)

    def _append(self, cursor: Any, drafts: Sequence[Draft], prune_through: int | None) -> int:
        """SQLite's append, statement by statement (what ``audit_append`` does in PostgreSQL)."""

        def run(statement: Prepared, values: dict[str, Any]) -> Any:
            cursor.execute(statement.sql, statement.params(values))
            return cursor.fetchone()

        n = len(drafts)
        end, previous = run(self._take, {"b_n": n})
        if prune_through is not None:
            for prune in self._prune:
                run(prune, {"b_through": prune_through})
        added: dict[tuple[str, str], int] = {}
        for draft, _ in drafts:
            if draft.type == "request" and draft.key is not None and draft.operation is not None:
                added[(draft.key, draft.operation)] = added.get((draft.key, draft.operation), 0) + 1
        counts: dict[tuple[str | None, str | None], int] = {}  # running counts, before the batch
        for (key, operation), k in sorted(added.items()):
            (total,) = run(self._count, {"b_key": key, "b_op": operation, "b_n": k})
            counts[(key, operation)] = int(total) - k
        previous = bytes(previous)
        rows = []
        for i, (draft, at) in enumerate(drafts):
            pair = (draft.key, draft.operation)
            count = None
            if draft.type == "request" and pair in counts:
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
        cursor.executemany(self._insert.sql, rows)
        run(self._move, {"b_hash": previous})
        return int(end)

    @property
    def concurrent_appends(self) -> int:
        """How many ``append_async`` calls may run side by side."""
        return _PG_APPENDS if self._loop_connection is not None else 1

    def close(self) -> None:
        if self._loop_connection is not None:
            self._loop_connection.close()

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
