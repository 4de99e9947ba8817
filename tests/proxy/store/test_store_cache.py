"""The instruction and embedding caches: shared, expiring, bounded."""

from __future__ import annotations

import time
from pathlib import Path

import redis
from store_fixtures import (
    SHARED_REDIS,
    MakeStore,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
)

from proxy.store import Store, StoreSettings
from proxy.store.sqlite_store import SQLiteBackend


def test_a_value_set_on_one_replica_is_read_on_another(make_store: MakeStore) -> None:
    one, two = make_store(), make_store()
    one.cache_set("instruction", "prompt " * 10_000, b"be kind")
    one.cache_set("embedding", "prompt", b"\x00\x01\x02")
    assert two.cache_get("instruction", "prompt " * 10_000) == b"be kind"
    assert two.cache_get("embedding", "prompt") == b"\x00\x01\x02"
    assert two.cache_get("instruction", "prompt") is None


def test_values_expire_after_their_ttl(make_store: MakeStore) -> None:
    store = make_store(instruction_cache_ttl_s=0.3)
    store.cache_set("instruction", "p", b"v")
    store.cache_set("embedding", "p", b"e")
    assert store.cache_get("instruction", "p") == b"v"
    time.sleep(0.4)
    assert store.cache_get("instruction", "p") is None
    assert store.cache_get("embedding", "p") == b"e"


def test_oversized_values_are_not_cached(make_store: MakeStore) -> None:
    store = make_store(cache_max_value_bytes=10)
    store.cache_set("embedding", "small", b"x" * 10)
    store.cache_set("embedding", "big", b"x" * 11)
    assert store.cache_get("embedding", "small") == b"x" * 10
    assert store.cache_get("embedding", "big") is None


def test_caches_keep_about_their_bound(make_store: MakeStore, backend: str) -> None:
    store = make_store(cache_max_entries=5)
    for i in range(200):
        store.cache_set("embedding", f"p{i}", b"v")
    kept = [i for i in range(200) if store.cache_get("embedding", f"p{i}") is not None]
    present = len(kept)
    if backend == "redis":
        assert kept == [195, 196, 197, 198, 199]  # the oldest go first
        client = redis.Redis.from_url(SHARED_REDIS)
        stored = list(client.scan_iter(match=f"{store.settings.prefix}:cache:embedding:*"))
        client.close()
        assert len(stored) == 5
    else:
        assert 5 <= present < 5 + 64  # trimmed every 64 sets
    assert store.cache_get("embedding", "p199") == b"v"


def test_the_sqlite_cache_trims_to_its_bound(tmp_path: Path) -> None:
    settings = StoreSettings(path=tmp_path / "s.db", spool_dir=tmp_path / "sp",
                             cache_max_entries=10)
    store = Store(SQLiteBackend(settings), settings)
    for i in range(64):
        store.cache_set("instruction", f"p{i}", b"v")
    present = [i for i in range(64) if store.cache_get("instruction", f"p{i}") is not None]
    assert present == list(range(54, 64))
    store.close()
