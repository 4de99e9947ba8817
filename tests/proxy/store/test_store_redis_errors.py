"""Every Redis error reply that says the server cannot serve now (OOM at maxmemory, BUSY,
NOPERM, READONLY, LOADING, MASTERDOWN...) is ``StoreUnavailable``: limits degrade by
``limits_on_error``, the failure is counted, the admin API answers 503; a bug's reply (a
script's ERR, WRONGTYPE) still propagates. At ``maxmemory`` (with ``noeviction``, on a
redis-server of the test's own) the limit scripts still run (``allow-oom``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from redis._parsers.base import BaseParser
from store_fixtures import (
    RedisProcess,
    full,
    full_redis_fixture,  # noqa: F401 - a fixture
    own_redis_fixture,  # noqa: F401 - a fixture
)

from proxy.store import Store, StoreSettings, StoreUnavailable, redis_lua
from proxy.store.redis_store import RedisBackend, unavailable_on_connection_errors

pytestmark = pytest.mark.slow  # a redis-server process of the test's own

OUTAGE_REPLIES = [
    "OOM command not allowed when used memory > 'maxmemory'.",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "NOPERM User default has no permissions to run the 'evalsha' command",
    "NOAUTH Authentication required.",
    "WRONGPASS invalid username-password pair or user is disabled.",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
    "NOREPLICAS Not enough good replicas to write.",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "CLUSTERDOWN The cluster is down",
    "ERR max number of clients reached",
]
BUG_REPLIES = [
    "ERR user_script:1: Script attempted to access nonexistent global variable 'x'",
    "ERR wrong number of arguments for 'set' command",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
]


def client_error(reply: str) -> redis.RedisError:
    """The exception redis-py raises for this error reply."""
    error: redis.RedisError = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    return error


@pytest.mark.parametrize("reply", OUTAGE_REPLIES, ids=lambda r: r.split()[0 if r[:3] != "ERR"
                                                                          else 1])
def test_replies_that_say_the_server_cannot_serve_are_unavailable(reply: str) -> None:
    with pytest.raises(StoreUnavailable), unavailable_on_connection_errors():
        raise client_error(reply)


@pytest.mark.parametrize("reply", BUG_REPLIES, ids=lambda r: r.split()[1])
def test_a_bugs_reply_propagates(reply: str) -> None:
    with pytest.raises(redis.ResponseError), unavailable_on_connection_errors():
        raise client_error(reply)


def test_redis_at_maxmemory_refuses_writes_and_is_counted(
        own_redis: RedisProcess, full_redis: redis.Redis, tmp_path: Path) -> None:
    settings = StoreSettings(url=own_redis.url, prefix="oom", spool_dir=tmp_path / "spool",
                             limits_on_error="fail_closed", retry_s=0.001)
    store = Store(RedisBackend(settings), settings)
    try:
        key = store.create_key("limited", rpm=100)
        full(full_redis)
        with pytest.raises(StoreUnavailable, match="OOM"):
            store.create_key("another")
        health = store.health()
        assert health.reachable and health.errors == {"keys": 1}  # it answered: full
        time.sleep(0.01)  # past retry_s: each call below reaches Redis
        assert store.find_key(key.key) is not None  # reads still work at maxmemory

        full_redis.config_set("maxmemory", 0)
        full_redis.set("oom:usage:broken:rpm", "a string")  # a bug: the wrong key type
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            store.admit("broken", 100, None)
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["fail_open", "fail_closed"])
def test_limits_keep_counting_at_maxmemory(own_redis: RedisProcess, full_redis: redis.Redis,
                                           tmp_path: Path, mode: str) -> None:
    """The previous session's question: at maxmemory (a full audit stream or cache, not the
    limits, can cause it) every limit script was refused, so ``fail_open`` took every key's
    limits off and ``fail_closed`` refused every limited key until Redis took writes again.
    The limit scripts run there (``allow-oom``: their writes are bounded), so a key is still
    held to its ``rpm`` and ``tpm``, exactly, either way."""
    settings = StoreSettings(url=own_redis.url, prefix="oom", spool_dir=tmp_path / "spool",
                             limits_on_error=mode, retry_s=0.001)
    store = Store(RedisBackend(settings), settings)
    try:
        key = store.create_key("limited", rpm=2, tpm=100).record.id
        full(full_redis)
        with pytest.raises(StoreUnavailable, match="OOM"):
            store.create_key("another")  # other writes are still refused
        time.sleep(0.01)  # past retry_s: each call below reaches Redis
        assert [store.admit(key, 2, 100).allowed for _ in range(3)] == [True, True, False]
        held = store.reserve_tokens(key, 100, 10, 60)
        assert (held.allowed, held.reserved, held.degraded) == (True, 60, False)
        refused = store.reserve_tokens(key, 100, 50, 50)
        assert (refused.allowed, refused.reason, refused.degraded) == (False, "tpm", False)
        store.charge_tokens(key, 20, held.reserved, held.reserved_at)  # 60 out, 20 in
        assert store.reserve_tokens(key, 100, 80, 80).allowed
        assert not store.reserve_tokens(key, 100, 1, 1).allowed
        assert store.health().degraded_limits == 0 and "limits" not in store.health().errors
    finally:
        store.close()


def test_a_redis_without_script_flags_runs_the_limits_without_them(
        own_redis: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis 6 reads the flags line as Lua and refuses it; the limits then run without it. Here
    a line Redis 7 does not compile either stands for it."""
    monkeypatch.setattr(redis_lua, "ALLOW_OOM", "# flags, as Redis 6 reads them\n")
    settings = StoreSettings(url=own_redis.url, prefix="six", spool_dir=tmp_path / "spool")
    backend = RedisBackend(settings)
    for name, text in (("_admit", redis_lua.ADMIT), ("_reserve", redis_lua.RESERVE)):
        body = text.split("\n", 1)[1]
        setattr(backend, name, backend.client.register_script(redis_lua.ALLOW_OOM + body))
    store = Store(backend, settings)
    try:
        assert [store.admit("k", 1, None).allowed for _ in range(2)] == [True, False]
        assert store.reserve_tokens("k", 10, 10, 10).reserved == 10
        assert store.health().errors == {}
    finally:
        store.close()
