"""The replay ledger on both backends: replays and unordered acceptances never let guesses
run on, a deactivated seed takes nothing ever again, positions the ledger cannot hold are
refused before anything changes, and exactly one of racing acceptances wins."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from vault.errors import BadRequest
from vault.store import make_engine
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
