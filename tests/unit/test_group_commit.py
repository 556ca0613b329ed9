"""SQLite's group commit (vault/store/writer.py): writes queued from the event loop in one
step share one transaction, each learns its own result, a failure keeps none of them, and a
writer that finds the file locked by another waits its turn instead of failing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from vault.errors import StoreUnavailable
from vault.store import Database
from vault.store.writer import GroupCommit, SqliteWriter


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    made = Database.open(f"sqlite:///{tmp_path / 'group.db'}")
    with made.engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"))
    yield made
    made.dispose()


class CountingWriter(SqliteWriter):
    """Counts the transactions the group commit asks for."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.transactions = 0

    def try_run(self, body: Any) -> Any:
        self.transactions += 1
        return super().try_run(body)


def insert(k: int) -> Any:
    def body(cursor: Any) -> int:
        cursor.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, f"v{k}"))
        return k * 10

    return body


def rows(db: Database) -> list[int]:
    with db.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT k FROM t ORDER BY k"))]


def test_writes_of_one_step_share_a_transaction_and_each_gets_its_result(db: Database) -> None:
    writer = CountingWriter(db)
    group = GroupCommit(writer)

    async def many() -> list[int]:
        return list(await asyncio.gather(*(group.write(insert(k)) for k in range(50))))

    assert asyncio.run(many()) == [k * 10 for k in range(50)]
    assert rows(db) == list(range(50))
    assert 1 <= writer.transactions <= 2  # the first write's flush may start alone


def test_a_failed_transaction_fails_every_write_in_it_and_keeps_none(db: Database) -> None:
    group = GroupCommit(SqliteWriter(db))

    async def many() -> list[Any]:
        writes = [group.write(insert(k)) for k in (1, 2)]
        writes.append(group.write(insert(1)))  # the same key again: the batch fails
        return list(await asyncio.gather(*writes, return_exceptions=True))

    outcomes = asyncio.run(many())
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert rows(db) == []

    async def later() -> int:  # the next write is a transaction of its own, and works
        return await group.write(insert(3))

    assert asyncio.run(later()) == 30
    assert rows(db) == [3]


def test_a_writer_that_finds_the_file_locked_waits_its_turn(db: Database) -> None:
    """Another process's writer (another ``SqliteWriter``, its own ``flock``) holds the file
    longer than the inline wait: the group's transaction goes to a thread and commits once
    the lock is free."""
    other = SqliteWriter(db)
    holding = threading.Event()

    def hold() -> None:
        def body(cursor: Any) -> None:
            cursor.execute("INSERT INTO t (k, v) VALUES (1000, 'other')")
            holding.set()
            time.sleep(0.1)

        other.run(body)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    group = GroupCommit(SqliteWriter(db), inline_wait=0.005)

    async def many() -> tuple[list[int], float]:
        started = time.monotonic()
        done = await asyncio.gather(*(group.write(insert(k)) for k in range(5)))
        return list(done), time.monotonic() - started

    try:
        results, waited = asyncio.run(many())
    finally:
        holder.join()
    assert results == [k * 10 for k in range(5)]
    assert waited >= 0.05  # it did wait for the other writer
    assert rows(db) == [0, 1, 2, 3, 4, 1000]


def test_one_writer_per_database_in_a_process(db: Database, tmp_path: Path) -> None:
    other = Database.open(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert SqliteWriter.of(db) is SqliteWriter.of(db)
        assert SqliteWriter.of(other) is not SqliteWriter.of(db)
    finally:
        other.dispose()
