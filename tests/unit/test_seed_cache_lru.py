"""The seed cache's table (hsm/_seed_cache.py): bounded, least recently used out first,
every handle it lets go of handed back (to be destroyed), bindings compared as digests."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from hsm._seed_cache import MAX_BINDINGS, SeedCache
from tests.unit.fake_hsm import UNATTENDED, FakeHsm, registry_over

W1, W2 = b"wrap-1", b"wrap-2"


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: SeedCache[str] = SeedCache(2)
    assert cache.put(W1, digest("a"), "A", digest("id-a")) == []
    assert cache.put(W1, digest("b"), "B", digest("id-b")) == []
    assert cache.get(W1, digest("a")) is not None  # a is now the most recent
    assert cache.put(W1, digest("c"), "C", digest("id-c")) == ["B"]
    assert cache.get(W1, digest("b")) is None
    assert len(cache) == 2
    entry = cache.get(W1, digest("a"))
    assert entry is not None
    assert entry.handle == "A"


def test_the_bound_holds_however_many_are_put() -> None:
    cache: SeedCache[int] = SeedCache(3)
    out: list[int] = []
    for i in range(10):
        out += cache.put(W1, digest(str(i)), i, digest(f"id-{i}"))
    assert len(cache) == 3
    assert sorted(out) == list(range(7))  # every handle let go of is handed back, once


def test_size_zero_keeps_nothing() -> None:
    cache: SeedCache[str] = SeedCache(0)
    assert cache.put(W1, digest("a"), "A", digest("id")) == ["A"]
    assert cache.get(W1, digest("a")) is None
    assert len(cache) == 0
    with pytest.raises(ValueError):
        SeedCache(-1)


def test_a_blob_is_named_by_its_wrap_key_and_digest() -> None:
    cache: SeedCache[str] = SeedCache(8)
    cache.put(W1, digest("a"), "A1", digest("id"))
    assert cache.get(W2, digest("a")) is None
    assert cache.get(W1, digest("b")) is None
    # The same blob again replaces its entry, and the old handle is handed back.
    assert cache.put(W1, digest("a"), "A2", digest("id")) == ["A1"]
    assert len(cache) == 1


def test_only_verified_bindings_match() -> None:
    cache: SeedCache[str] = SeedCache(8)
    cache.put(W1, digest("a"), "A", digest("id-1"))
    entry = cache.get(W1, digest("a"))
    assert entry is not None
    assert entry.verified(digest("id-1"))
    assert not entry.verified(digest("id-2"))
    entry.add(digest("id-2"))
    entry.add(digest("id-2"))
    assert entry.bindings == [digest("id-1"), digest("id-2")]
    for i in range(3, 10):
        entry.add(digest(f"id-{i}"))
    assert len(entry.bindings) == MAX_BINDINGS
    assert not entry.verified(digest("id-1"))  # the oldest ones went


def test_drop_a_blob_a_wrap_key_or_everything() -> None:
    cache: SeedCache[str] = SeedCache(8)
    cache.put(W1, digest("a"), "A", digest("x"))
    cache.put(W1, digest("b"), "B", digest("x"))
    cache.put(W2, digest("c"), "C", digest("x"))
    assert cache.drop(W1, digest("a")) == "A"
    assert cache.drop(W1, digest("a")) is None
    cache.put(W1, digest("a"), "A", digest("x"))
    assert sorted(cache.drop_wrap_key(W1)) == ["A", "B"]
    assert len(cache) == 1
    assert cache.clear() == ["C"]
    assert len(cache) == 0


def test_a_worker_drops_the_seeds_of_versions_another_process_removed(tmp_path: Path) -> None:
    """One registry trims (as the officers' tool would); another, as a serving worker,
    notices when it reads the key again and drops its cached seeds of the removed version."""
    url = f"sqlite:///{tmp_path / 'vault.db'}"
    fake = FakeHsm()
    officers = registry_over(fake, url)
    worker = registry_over(fake, url, cache_ttl=0.0)
    officers.create_sync("otp", "otp-seed", by=UNATTENDED)
    officers.rotate_sync("otp", by=UNATTENDED)
    before = asyncio.run(worker.get("otp"))
    assert sorted(before.versions) == [1, 2]
    officers.configure_sync(
        "otp", min_decryption_version=2, min_encryption_version=2, by=UNATTENDED
    )
    officers.trim_sync("otp", 2, by=UNATTENDED)
    fake.ops.forgotten.clear()
    after = asyncio.run(worker.get("otp"))
    assert sorted(after.versions) == [2]
    assert fake.ops.forgotten == [before.versions[1].object_id("wrap")]
    # Nothing more to drop on the next read.
    asyncio.run(worker.get("otp"))
    assert fake.ops.forgotten == [before.versions[1].object_id("wrap")]
