"""The per-version wrap bound (vault/usage.py): counted in memory, added to the database off
the hot path, a latest version rotated once (across replicas) when it reaches the bound, a
version refused at the hard limit, and a restore that undercounts within the margin."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.unit.fake_hsm import FakeHsm, registry_over
from vault.envelope import EncryptItem
from vault.errors import KeyVersionUnavailable, StoreUnavailable
from vault.registry import KeyRegistry
from vault.store import tables
from vault.transit import Encrypted, Transit
from vault.usage import IV_LIMIT, REFUSE_AT, ROTATE_AT, WrapCounter


def counter_over(registry: KeyRegistry, **limits: float) -> WrapCounter:
    return WrapCounter(
        registry.store,
        lambda name, version: registry.rotate_sync(name, if_latest=version),
        **limits,  # type: ignore[arg-type]
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[KeyRegistry]:
    made = registry_over(FakeHsm(), f"sqlite:///{tmp_path / 'vault.db'}", cache_ttl=0)
    made.create_sync("backup-share", "aes256-gcm96")
    yield made
    made.store.db.dispose()


def stored_wraps(registry: KeyRegistry) -> dict[int, int]:
    with registry.store.db.engine.connect() as conn:
        rows = conn.execute(select(tables.key_versions.c.version, tables.key_versions.c.wraps))
        return {int(row.version): int(row.wraps) for row in rows}


def encrypt(transit: Transit, count: int, key_version: int | None = None) -> list[Encrypted]:
    """``count`` single encrypts: one data key, one wrap each."""
    made = []
    for _ in range(count):
        [result] = asyncio.run(
            transit.encrypt("backup-share", [EncryptItem(b"x", b"")], key_version)
        )
        assert isinstance(result, Encrypted), result
        made.append(result)
    return made


def test_a_batch_is_charged_one_wrap_per_data_key(registry: KeyRegistry) -> None:
    """A batch's items share one data key per version (format 0x02): what is counted is
    the wraps made, which is what the SP 800-38D bound is about."""
    counter = counter_over(registry, flush_interval=3600)
    transit = Transit(registry, registry.hsm, counter)
    registry.rotate_sync("backup-share")
    items = [EncryptItem(b"x", b"", key_version=1 + i % 2) for i in range(10)]
    results = asyncio.run(transit.encrypt("backup-share", items))
    assert {r.key_version for r in results if isinstance(r, Encrypted)} == {1, 2}
    counter.flush()
    assert stored_wraps(registry) == {1: 1, 2: 1}


def test_the_bounds_leave_room_below_sp800_38d() -> None:
    """A restore may lose up to 3 x 2^30 wraps of a version before 2^32 is at risk."""
    assert IV_LIMIT == 2**32
    assert IV_LIMIT - ROTATE_AT >= 3 * 2**30
    assert ROTATE_AT < REFUSE_AT < IV_LIMIT


def test_every_wrap_is_counted_and_flushed_to_its_version(registry: KeyRegistry) -> None:
    counter = counter_over(registry, flush_interval=3600)
    transit = Transit(registry, registry.hsm, counter)
    encrypt(transit, 7)
    asyncio.run(transit.datakey("backup-share", 256, b""))
    assert stored_wraps(registry) == {1: 0}  # nothing written on the hot path
    counter.flush()
    assert stored_wraps(registry) == {1: 8}
    registry.rotate_sync("backup-share")
    encrypt(transit, 3)
    encrypt(transit, 2, key_version=1)
    counter.flush()
    assert stored_wraps(registry) == {1: 10, 2: 3}
    counter.flush()  # nothing new: nothing added twice
    assert stored_wraps(registry) == {1: 10, 2: 3}


def test_a_flush_runs_off_the_hot_path(registry: KeyRegistry) -> None:
    counter = counter_over(registry, flush_interval=0)
    transit = Transit(registry, registry.hsm, counter)
    started, release = threading.Event(), threading.Event()
    real = registry.store.add_wraps

    def slow(counts: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        started.set()
        release.wait(10)
        return real(counts)

    registry.store.add_wraps = slow  # type: ignore[method-assign]
    begin = time.monotonic()
    encrypt(transit, 1)
    assert started.wait(5)  # the flush began, on its own thread
    encrypt(transit, 1)  # and the next request does not wait for it
    assert time.monotonic() - begin < 5
    release.set()
    deadline = time.monotonic() + 5
    while stored_wraps(registry)[1] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    counter.flush()
    assert stored_wraps(registry) == {1: 2}


def test_a_failed_flush_keeps_the_counts(registry: KeyRegistry) -> None:
    counter = counter_over(registry, flush_interval=3600)
    transit = Transit(registry, registry.hsm, counter)
    encrypt(transit, 5)
    real = registry.store.add_wraps

    def down(counts: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        raise StoreUnavailable()

    registry.store.add_wraps = down  # type: ignore[method-assign]
    counter.flush()
    registry.store.add_wraps = real  # type: ignore[method-assign]
    counter.flush()
    assert stored_wraps(registry) == {1: 5}


def test_the_latest_version_is_rotated_at_the_bound(registry: KeyRegistry) -> None:
    counter = counter_over(registry, rotate_at=10, refuse_at=100, flush_interval=3600)
    transit = Transit(registry, registry.hsm, counter)
    encrypt(transit, 9)
    counter.flush()
    assert registry.get_sync("backup-share").latest_version == 1
    encrypt(transit, 1)
    counter.flush()
    assert registry.get_sync("backup-share").latest_version == 2
    made = encrypt(transit, 3)
    assert {m.key_version for m in made} == {2}
    counter.flush()  # v1 is past the bound but no longer the latest: no second rotation
    assert registry.get_sync("backup-share").latest_version == 2


def test_replicas_that_all_see_the_bound_rotate_once(registry: KeyRegistry) -> None:
    replicas = [counter_over(registry, rotate_at=10, flush_interval=3600) for _ in range(3)]
    transits = [Transit(registry, registry.hsm, c) for c in replicas]
    for transit in transits:
        encrypt(transit, 4)  # 12 in all: each replica alone is under the bound
    for counter in replicas:
        counter.flush()
    for counter in replicas:  # by now each one has heard the total from the database
        counter.flush()
    assert registry.get_sync("backup-share").latest_version == 2
    assert stored_wraps(registry) == {1: 12, 2: 0}


def test_a_version_at_the_hard_limit_is_refused(registry: KeyRegistry) -> None:
    counter = counter_over(registry, rotate_at=5, refuse_at=8, flush_interval=3600)
    transit = Transit(registry, registry.hsm, counter)
    encrypt(transit, 8, key_version=1)
    with pytest.raises(KeyVersionUnavailable, match="rotate the key"):
        asyncio.run(transit.encrypt("backup-share", [EncryptItem(b"x", b"")], 1))
    with pytest.raises(KeyVersionUnavailable, match="rotate the key"):
        asyncio.run(transit.datakey("backup-share", 256, b"", 1))
    counter.flush()  # the bound was crossed: the key rotates, and v2 takes new wraps
    assert {m.key_version for m in encrypt(transit, 2)} == {2}


def test_the_hard_limit_counts_what_other_replicas_reported(registry: KeyRegistry) -> None:
    first = counter_over(registry, rotate_at=1000, refuse_at=6, flush_interval=3600)
    second = counter_over(registry, rotate_at=1000, refuse_at=6, flush_interval=3600)
    encrypt(Transit(registry, registry.hsm, first), 5)
    first.flush()
    transit = Transit(registry, registry.hsm, second)  # reads v1 with 5 wraps
    encrypt(transit, 1)
    with pytest.raises(KeyVersionUnavailable):
        encrypt(transit, 1)


def test_a_restored_database_rotates_within_the_margin(tmp_path: Path) -> None:
    """A restore from a copy taken before some wraps forgets them: the version is rotated
    after ``rotate_at`` more, so it wraps at most (what was lost) + ``rotate_at``."""
    path = tmp_path / "vault.db"
    fake = FakeHsm()
    registry = registry_over(fake, f"sqlite:///{path}", cache_ttl=0)
    registry.create_sync("backup-share", "aes256-gcm96")
    registry.store.db.dispose()
    backup = path.read_bytes()
    counter = counter_over(registry, rotate_at=10, flush_interval=3600)
    transit = Transit(registry, registry.hsm, counter)
    encrypt(transit, 9)
    counter.flush()
    registry.store.db.dispose()
    path.write_bytes(backup)  # the restore: v1's 9 wraps are forgotten
    for stale in (path.with_name("vault.db-wal"), path.with_name("vault.db-shm")):
        stale.unlink(missing_ok=True)
    restored = registry_over(fake, f"sqlite:///{path}", cache_ttl=0)
    counter = counter_over(restored, rotate_at=10, flush_interval=3600)
    transit = Transit(restored, restored.hsm, counter)
    for _ in range(10):
        encrypt(transit, 1)
        counter.flush()
    assert restored.get_sync("backup-share").latest_version == 2  # 9 lost + 10 counted
