"""Every Redis error reply that says the server cannot serve now (OOM at maxmemory, BUSY,
NOPERM, READONLY, LOADING, MASTERDOWN...) is ``StoreUnavailable``: limits degrade by
``limits_on_error``, the failure is counted, the admin API answers 503; a bug's reply (a
script's ERR, WRONGTYPE) still propagates. On a redis-server of the test's own, driven into
``maxmemory`` with ``noeviction``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis._parsers.base import BaseParser
from store_fixtures import (
    RedisProcess,
    own_redis_fixture,  # noqa: F401 - a fixture
)

from proxy.store import Store, StoreSettings, StoreUnavailable
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


@pytest.fixture(name="full_redis")
def full_redis_fixture(own_redis: RedisProcess) -> Iterator[redis.Redis]:
    """A client of the test's redis-server; ``full(client)`` puts it at maxmemory."""
    client = redis.Redis(port=own_redis.port)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


def full(client: redis.Redis) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)


def test_redis_at_maxmemory_degrades_limits_and_is_counted(
        own_redis: RedisProcess, full_redis: redis.Redis, tmp_path: Path) -> None:
    settings = StoreSettings(url=own_redis.url, prefix="oom", spool_dir=tmp_path / "spool",
                             limits_on_error="fail_closed", retry_s=0.001)
    store = Store(RedisBackend(settings), settings)
    try:
        key = store.create_key("limited", rpm=100)
        assert store.admit(key.record.id, 100, None).allowed
        full(full_redis)
        refused = store.admit(key.record.id, 100, None)
        assert not refused.allowed and refused.degraded and refused.retry_after_s == 1
        time.sleep(0.01)  # past retry_s: each call below reaches Redis
        store.charge_tokens(key.record.id, 50)  # lost and counted, never raised
        time.sleep(0.01)
        with pytest.raises(StoreUnavailable, match="OOM"):
            store.create_key("another")
        health = store.health()
        assert not health.reachable and health.degraded_limits == 1
        assert health.errors == {"limits": 2, "keys": 1}
        time.sleep(0.01)
        assert store.find_key(key.key) is not None  # reads still work at maxmemory

        full_redis.config_set("maxmemory", 0)
        full_redis.set("oom:usage:broken:rpm", "a string")  # a bug: the wrong key type
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            store.admit("broken", 100, None)
    finally:
        store.close()
