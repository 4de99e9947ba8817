"""One kind of store operation failing does not take the others down with it. The store had
one circuit breaker: a single cache write Redis refused at ``maxmemory`` (``OOM``) made every
call skip Redis for ``retry_s``, so every key's limits came off (``fail_open``: a key held to
``rpm: 2`` was admitted 6 times of 10) or every limited key was refused (``fail_closed``), and
keys could not be checked, although the limit scripts run at ``maxmemory`` (``allow-oom``) and
reads do too. Now each kind of operation (keys, limits, cache, audit) has its own breaker, and a
full store (``StoreFull``: it answered at once) trips none. With the default ``retry_s``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from store_fixtures import (
    MakeStore,
    RedisProcess,
    backend_fixture,  # noqa: F401 - a fixture
    full,
    full_redis_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
    own_redis_fixture,  # noqa: F401 - a fixture
    store_fixture,  # noqa: F401 - a fixture
)

from proxy.store import Store, StoreFull, StoreSettings, StoreUnavailable
from proxy.store.redis_store import RedisBackend

DEFAULT_RETRY_S = StoreSettings.model_fields["retry_s"].default


@pytest.mark.slow  # a redis-server process of the test's own
@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_a_refused_cache_write_at_maxmemory_leaves_every_keys_limits_counted(
        own_redis: RedisProcess, full_redis: redis.Redis, tmp_path: Path, mode: str) -> None:
    settings = StoreSettings(url=own_redis.url, prefix="full", spool_dir=tmp_path / "spool",
                             limits_on_error=mode)
    assert settings.retry_s == DEFAULT_RETRY_S == 1.0
    store = Store(RedisBackend(settings), settings)
    try:
        limited = store.create_key("limited", rpm=2).record
        other = store.create_key("other", rpm=1000)
        full(full_redis)
        decisions = []
        for i in range(5):  # as requests do: admitted, then their instruction cached
            decisions.append(store.admit(limited.id, limited.rpm, None))
            store.cache_set("instruction", f"prompt {i}", b"x" * 100)  # refused: OOM
        assert [(d.allowed, d.degraded) for d in decisions] == [
            (True, False), (True, False), (False, False), (False, False), (False, False)]
        other_decision = store.admit(other.record.id, 1000, None)
        assert (other_decision.allowed, other_decision.degraded) == (True, False)
        assert store.find_key(other.key) is not None  # keys are still checked
        with pytest.raises(StoreFull):
            store.create_key("refused")  # a refused key write trips nothing either
        assert store.health().reachable  # it answered (vilmo_store_reachable stays 1)
        assert store.find_key(other.key) is not None
        assert not store.admit(limited.id, limited.rpm, None).allowed
        health = store.health()
        assert health.degraded_limits == 0 and "limits" not in health.errors
        assert health.errors["cache"] == 5 and health.errors["keys"] == 1
    finally:
        store.close()


def test_a_failing_cache_skips_the_cache_only(store: Store,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache that cannot be reached (a timeout, refused by an ACL) is skipped for
    ``retry_s`` as a miss; limits, keys and the audit trail are still asked."""
    assert store.settings.retry_s == DEFAULT_RETRY_S
    issued = store.create_key("limited", rpm=1)
    asked: list[str] = []

    def unreachable(*_: object) -> None:
        asked.append("cache")
        raise StoreUnavailable("redis: Timeout reading from socket")

    monkeypatch.setattr(store.backend, "cache_set", unreachable)
    monkeypatch.setattr(store.backend, "cache_get", unreachable)
    store.cache_set("embedding", "a prompt", b"x")
    assert store.cache_get("embedding", "a prompt") is None  # skipped: a miss
    assert asked == ["cache"]
    first, second = (store.admit(issued.record.id, 1, None) for _ in range(2))
    assert (first.allowed, first.degraded, second.allowed, second.degraded) == (
        True, False, False, False)
    assert store.find_key(issued.key) is not None


def test_a_failing_limit_check_skips_the_limits_only(make_store: MakeStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The other way round: limits that cannot be counted degrade (``limits_on_error``) for
    ``retry_s``, while keys and caches are still read."""
    store = make_store()
    issued = store.create_key("limited", rpm=1)
    store.cache_set("embedding", "a prompt", b"kept")

    def unreachable(*_: object) -> None:
        raise StoreUnavailable("redis: Timeout reading from socket")

    monkeypatch.setattr(store.backend, "admit", unreachable)
    assert store.admit(issued.record.id, 1, None).degraded
    monkeypatch.undo()
    assert store.admit(issued.record.id, 1, None).degraded  # skipped for retry_s
    assert store.find_key(issued.key) is not None
    assert store.cache_get("embedding", "a prompt") == b"kept"
