"""The replay ledger on both backends: replays and unordered acceptances never let guesses
run on, a deactivated seed takes nothing ever again, positions the ledger cannot hold are
refused before anything changes, and exactly one of racing acceptances wins."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from vault.errors import BadRequest
from vault.store import Database, make_engine
from vault.store.aio import LoopConnections
from vault.store.otp_ledger import MAX_POSITION, LedgerState, LockoutPolicy, Outcome, ReplayLedger

KEY = "otp-seeds"
NOW = 1_700_000_000.0
POLICY = LockoutPolicy(max_failures=5, lockout_seconds=300)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = make_engine(database_url)
    yield made
    made.dispose()


@pytest.fixture
def ledger(engine: Engine) -> ReplayLedger:
    return ReplayLedger(engine, POLICY)


def seed() -> bytes:
    return os.urandom(16)


def test_an_unordered_acceptance_never_resets_the_failure_count(ledger: ReplayLedger) -> None:
    """Four guesses, one known-good OCRA response (a replay, for all the ledger can tell),
    one more guess: locked, as five guesses in a row would be."""
    s = seed()
    for _ in range(4):
        assert ledger.reject(s, KEY, NOW) is Outcome.MISMATCH
    assert ledger.accept(s, KEY, None, NOW) is Outcome.ACCEPTED
    assert ledger.reject(s, KEY, NOW) is Outcome.MISMATCH
    state = ledger.state(s)
    assert state is not None
    assert state.failures == 5
    assert state.locked(NOW)
    assert ledger.accept(s, KEY, None, NOW) is Outcome.LOCKED


def test_a_replay_counts_as_a_failure_and_locks_like_one(ledger: ReplayLedger) -> None:
    s = seed()
    assert ledger.accept(s, KEY, 7, NOW) is Outcome.ACCEPTED
    for failures in range(1, POLICY.max_failures + 1):
        assert ledger.accept(s, KEY, 7, NOW) is Outcome.REPLAYED
        state = ledger.state(s)
        assert state is not None
        assert state.failures == failures
    # Five replays lock the seed: even the next fresh code waits for the cool-down.
    assert ledger.accept(s, KEY, 8, NOW) is Outcome.LOCKED
    assert ledger.accept(s, KEY, 8, NOW + POLICY.lockout_seconds) is Outcome.ACCEPTED
    assert ledger.state(s) == LedgerState(8, 0, NOW + POLICY.lockout_seconds)


def test_an_ordered_acceptance_resets_the_failure_count(ledger: ReplayLedger) -> None:
    s = seed()
    for _ in range(4):
        ledger.reject(s, KEY, NOW)
    assert ledger.accept(s, KEY, 3, NOW) is Outcome.ACCEPTED
    assert ledger.state(s) == LedgerState(3, 0, 0.0)


@pytest.mark.parametrize("position", [MAX_POSITION + 1, 2**64 - 1, -2])
def test_a_position_the_ledger_cannot_hold_is_refused_and_changes_nothing(
    ledger: ReplayLedger, position: int
) -> None:
    s = seed()
    assert ledger.accept(s, KEY, 1, NOW) is Outcome.ACCEPTED
    with pytest.raises(BadRequest, match="2\\^63"):
        ledger.accept(s, KEY, position, NOW)
    assert ledger.state(s) == LedgerState(1, 0, 0.0)
    assert ledger.accept(s, KEY, MAX_POSITION, NOW) is Outcome.ACCEPTED


def test_deactivation_is_for_good(ledger: ReplayLedger) -> None:
    s = seed()
    assert ledger.accept(s, KEY, 0, NOW) is Outcome.ACCEPTED
    state = ledger.deactivate(s, KEY, NOW + 1)
    assert state.deactivated_at == NOW + 1
    assert ledger.accept(s, KEY, 1, NOW + 2) is Outcome.DEACTIVATED
    assert ledger.accept(s, KEY, None, NOW + 2) is Outcome.DEACTIVATED
    assert ledger.reject(s, KEY, NOW + 2) is Outcome.DEACTIVATED
    # Unlocking does not revive it, nor does a second deactivation move its time.
    after_unlock = ledger.unlock(s, NOW + 3)
    assert after_unlock is not None
    assert after_unlock.deactivated_at == NOW + 1
    assert ledger.deactivate(s, KEY, NOW + 4).deactivated_at == NOW + 1
    assert ledger.accept(s, KEY, 10**6, NOW + 10**6) is Outcome.DEACTIVATED


def test_a_seed_never_seen_can_be_deactivated(ledger: ReplayLedger) -> None:
    s = seed()
    assert ledger.deactivate(s, KEY, NOW).deactivated_at == NOW
    assert ledger.accept(s, KEY, 0, NOW) is Outcome.DEACTIVATED


def test_unlock_clears_the_lock_and_the_count_and_keeps_the_position(
    ledger: ReplayLedger,
) -> None:
    s = seed()
    ledger.accept(s, KEY, 4, NOW)
    for _ in range(POLICY.max_failures):
        ledger.reject(s, KEY, NOW)
    assert ledger.accept(s, KEY, 5, NOW) is Outcome.LOCKED
    assert ledger.unlock(s, NOW) == LedgerState(4, 0, 0.0)
    assert ledger.accept(s, KEY, 4, NOW) is Outcome.REPLAYED
    assert ledger.accept(s, KEY, 5, NOW) is Outcome.ACCEPTED
    assert ledger.unlock(seed(), NOW) is None  # nothing to unlock: no row made


def test_start_records_positions_used_elsewhere(ledger: ReplayLedger) -> None:
    a, b = seed(), seed()
    ledger.start([(a, 41), (b, MAX_POSITION)], KEY, NOW)
    assert ledger.accept(a, KEY, 41, NOW) is Outcome.REPLAYED
    assert ledger.accept(a, KEY, 42, NOW) is Outcome.ACCEPTED
    assert ledger.accept(b, KEY, MAX_POSITION, NOW) is Outcome.REPLAYED
    with pytest.raises(BadRequest):
        ledger.start([(seed(), MAX_POSITION + 1)], KEY, NOW)


def test_racing_acceptances_of_one_position_accept_exactly_one(engine: Engine) -> None:
    s = seed()
    # One ledger per thread, as each replica has its own.
    ledgers = [ReplayLedger(engine, LockoutPolicy(max_failures=1000)) for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda i: ledgers[i % 8].accept(s, KEY, 5, NOW), range(40)))
    assert outcomes.count(Outcome.ACCEPTED) == 1
    assert set(outcomes) == {Outcome.ACCEPTED, Outcome.REPLAYED}


def test_the_migration_keeps_existing_seeds_active(tmp_path: Path) -> None:
    from sqlalchemy import select

    from vault.store.migrations import upgrade
    from vault.store.tables import otp_ledger

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0001")
        s = seed()
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO otp_ledger (seed_id, key_name, last_position, failures,"
                " locked_until, updated_at) VALUES (?, ?, 9, 2, 0.0, 0.0)",
                (s, KEY),
            )
        upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(select(otp_ledger).where(otp_ledger.c.seed_id == s)).one()
        assert row.deactivated_at is None
        ledger = ReplayLedger(engine, POLICY)
        assert ledger.accept(s, KEY, 10, NOW) is Outcome.ACCEPTED
        assert ledger.deactivate(s, KEY, NOW).deactivated_at == NOW
    finally:
        engine.dispose()


# -- from the event loop (what verifications use): on PostgreSQL the reads and acceptances
# -- run on the loop's own connections, one statement each; on SQLite the same calls inline


@pytest.fixture
def loop_ledger(database_url: str) -> Iterator[ReplayLedger]:
    db = Database.open(database_url)
    made = ReplayLedger.of(db, POLICY)
    yield made
    made.close()
    db.dispose()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_from_the_loop_a_first_code_makes_the_row_and_a_replay_counts_as_a_failure(
    loop_ledger: ReplayLedger,
) -> None:
    s = seed()

    async def scenario() -> list[Any]:
        unseen = await loop_ledger.state_async(s)
        first = await loop_ledger.accept_async(s, KEY, 3, NOW, unseen)
        after = await loop_ledger.state_async(s)
        again = await loop_ledger.accept_async(s, KEY, 3, NOW, after)
        failed = await loop_ledger.state_async(s)
        ahead = await loop_ledger.accept_async(s, KEY, 4, NOW)
        return [unseen, first, after, again, failed, ahead, await loop_ledger.state_async(s)]

    unseen, first, after, again, failed, ahead, last = run(scenario())
    assert unseen is None
    assert first is Outcome.ACCEPTED
    assert after == LedgerState(3, 0, 0.0)
    assert again is Outcome.REPLAYED
    assert failed.failures == 1
    assert ahead is Outcome.ACCEPTED
    assert (last.last_position, last.failures) == (4, 0)  # an ordered acceptance resets it


def test_from_the_loop_a_stale_read_cannot_let_a_code_through_twice(
    loop_ledger: ReplayLedger,
) -> None:
    """The read said the code was ahead; another request accepted it since: the conditional
    statement decides, and the second is a replay."""
    s = seed()
    assert loop_ledger.accept(s, KEY, 1, NOW) is Outcome.ACCEPTED
    stale = loop_ledger.state(s)

    async def twice() -> list[Outcome]:
        return [await loop_ledger.accept_async(s, KEY, 2, NOW, stale) for _ in range(2)]

    assert run(twice()) == [Outcome.ACCEPTED, Outcome.REPLAYED]
    state = loop_ledger.state(s)
    assert state is not None
    assert (state.last_position, state.failures) == (2, 1)


def test_from_the_loop_locked_and_deactivated_seeds_take_nothing(
    loop_ledger: ReplayLedger,
) -> None:
    locked, gone, unordered = seed(), seed(), seed()
    for _ in range(POLICY.max_failures):
        loop_ledger.reject(locked, KEY, NOW)
    loop_ledger.deactivate(gone, KEY, NOW)

    async def tries() -> list[Outcome]:
        return [
            await loop_ledger.accept_async(locked, KEY, 9, NOW),
            await loop_ledger.accept_async(gone, KEY, 9, NOW),
            await loop_ledger.accept_async(gone, KEY, None, NOW),
            await loop_ledger.accept_async(unordered, KEY, None, NOW),  # no row yet
            await loop_ledger.accept_async(unordered, KEY, None, NOW),  # OCRA: no order
        ]

    assert run(tries()) == [
        Outcome.LOCKED,
        Outcome.DEACTIVATED,
        Outcome.DEACTIVATED,
        Outcome.ACCEPTED,
        Outcome.ACCEPTED,
    ]
    assert loop_ledger.state(locked) == LedgerState(-1, POLICY.max_failures, NOW + 300)
    gone_state = loop_ledger.state(gone)
    assert gone_state is not None
    assert gone_state.last_position == -1


def test_from_the_loop_a_position_the_ledger_cannot_hold_is_refused(
    loop_ledger: ReplayLedger,
) -> None:
    s = seed()
    with pytest.raises(BadRequest):
        run(loop_ledger.accept_async(s, KEY, MAX_POSITION + 1, NOW))
    assert loop_ledger.state(s) is None


@pytest.mark.parametrize("first_use", [True, False], ids=["new-seed", "known-seed"])
def test_from_the_loop_racing_acceptances_accept_exactly_one(
    database_url: str, first_use: bool
) -> None:
    """Forty checks of one code, from four processes' ledgers (each with its own
    connections) at once: one is accepted, whether the seed's row exists yet or not."""
    s = seed()
    dbs = [Database.open(database_url) for _ in range(4)]
    ledgers = [ReplayLedger.of(db, LockoutPolicy(max_failures=1000)) for db in dbs]
    if not first_use:
        assert ledgers[0].accept(s, KEY, 4, NOW) is Outcome.ACCEPTED

    async def race() -> list[Outcome]:
        return list(
            await asyncio.gather(*(ledgers[i % 4].accept_async(s, KEY, 5, NOW) for i in range(40)))
        )

    try:
        outcomes = run(race())
    finally:
        for ledger, db in zip(ledgers, dbs, strict=True):
            ledger.close()
            db.dispose()
    assert outcomes.count(Outcome.ACCEPTED) == 1
    assert set(outcomes) == {Outcome.ACCEPTED, Outcome.REPLAYED}


def test_loop_connections_stay_within_their_number(pg_database: str) -> None:
    """Sixty statements at once on four connections: the rest wait their turn, and no more
    than four connections are ever opened."""
    db = Database.open(pg_database)
    connections = LoopConnections(db, 4, barrier=False)

    async def many() -> list[Any]:
        return list(
            await asyncio.gather(
                *(connections.call("SELECT pg_backend_pid()", None) for _ in range(60))
            )
        )

    try:
        pids = {row[0] for row in run(many())}
    finally:
        connections.close()
        db.dispose()
    assert 1 <= len(pids) <= 4
