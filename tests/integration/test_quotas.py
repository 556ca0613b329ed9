"""Quota counters on SQLite and PostgreSQL: fixed and sliding windows admit exactly their
limit, say when the next request would pass, and hold under concurrent writers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from vault.errors import BadRequest
from vault.policy import QuotaRule
from vault.quotas import QuotaExceeded, Quotas
from vault.store import Database
from vault.store.quotas import QuotaStore


def rule(limit: int, window: int, *, sliding: bool, per: str = "service") -> QuotaRule:
    return QuotaRule(
        name=f"r-{limit}-{window}-{sliding}",
        keys=("*",),
        operations=frozenset({"decrypt"}),
        services=("*",),
        per=per,
        limit=limit,
        window=window,
        sliding=sliding,
    )


@pytest.fixture
def store(database_url: str) -> Iterator[QuotaStore]:
    db = Database.open(database_url)
    yield QuotaStore(db)
    db.dispose()


def test_fixed_window(store: QuotaStore) -> None:
    r = rule(3, 60, sliding=False)
    t0 = 6_000_000.0  # a window starts here (a multiple of 60)
    assert [store.charge(r, "s", 1, t0 + i) for i in range(3)] == [None, None, None]
    assert store.charge(r, "s", 1, t0 + 10) == 50.0  # until the window ends
    assert store.charge(r, "other", 1, t0 + 10) is None  # scopes count apart
    assert store.charge(r, "s", 1, t0 + 60) is None  # a new window
    assert store.charge(r, "s", 2, t0 + 61) is None
    assert store.charge(r, "s", 1, t0 + 62) is not None
    assert store.charge(r, "s", 4, t0 + 200) == 60.0  # more than the limit at once: never
    # A replica whose clock is behind keeps counting in the newer window.
    assert store.charge(r, "s", 1, t0 + 59) is not None


def test_sliding_window(store: QuotaStore) -> None:
    r = rule(3, 86400, sliding=True)
    t0 = 1_000_000.0
    for at in (t0, t0 + 100, t0 + 200):
        assert store.charge(r, "user", 1, at) is None
    assert store.charge(r, "user", 1, t0 + 300) == 86100.0  # the first one leaves at t0+1d
    assert store.charge(r, "user", 1, t0 + 86400) is None
    assert store.charge(r, "user", 2, t0 + 86401) == 199.0  # two: wait for the 2nd oldest
    assert store.charge(r, "user", 1, t0 + 86500) is None
    store.prune(t0 + 10 * 86400)
    assert store.charge(r, "user", 3, t0 + 10 * 86400 + 1) is None


@pytest.mark.parametrize("sliding", [True, False])
def test_concurrent_writers_admit_exactly_the_limit(store: QuotaStore, sliding: bool) -> None:
    r = rule(5, 3600, sliding=sliding)
    admitted: list[bool] = []
    start = threading.Barrier(8)

    def client() -> None:
        start.wait()
        for _ in range(4):
            admitted.append(store.charge(r, "hot", 1, 7_200_000.0) is None)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted.count(True) == 5
    assert len(admitted) == 32


def test_per_subject_rules_need_subjects(store: QuotaStore) -> None:
    quotas = Quotas(store, clock=lambda: 5_000_000.0)
    per_user = rule(1, 60, sliding=True, per="subject")

    async def charge(subjects: dict[str, int] | None, items: int = 1) -> None:
        await quotas.charge((per_user,), "svc", items, subjects)

    asyncio.run(charge({"d1": 1}))
    with pytest.raises(QuotaExceeded) as caught:
        asyncio.run(charge({"d1": 1}))
    assert caught.value.retry_after == 60
    assert caught.value.rule == per_user.name
    asyncio.run(charge({"d2": 1}))
    with pytest.raises(BadRequest):
        asyncio.run(charge(None))
    with pytest.raises(BadRequest):  # an item without a subject
        asyncio.run(charge({"d3": 1}, items=2))
