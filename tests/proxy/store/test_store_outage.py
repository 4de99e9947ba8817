"""Redis dies mid-burst and comes back, then dies again while the spool is being written back:
the gateway never waits on it, and the audit trail ends with every record exactly once (a
redis-server of the test's own, with an AOF fsync'd on every write; the shared one is never
touched)."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest
import redis
from store_fixtures import (
    RedisProcess,
    own_redis_fixture,  # noqa: F401 - a fixture
)

from proxy.store import AuditQuery, AuditRecord, Store, StoreSettings
from proxy.store.redis_store import RedisBackend

BURST = 3000


def replica(url: str, spool: Path) -> Store:
    settings = StoreSettings(url=url, prefix="outage", spool_dir=spool, timeout_s=0.5,
                             limits_on_error="fail_closed", retry_s=0.05)
    return Store(RedisBackend(settings), settings)


def stream_ids(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    ids = [str((fields or {})["id"]) for _, fields in client.xrange("outage:audit") or []]
    client.close()
    return ids


def stream_length(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen("outage:audit"))
    except redis.ConnectionError:
        return 0
    finally:
        client.close()


@pytest.mark.slow  # seconds of real time: processes, servers or timing
def test_a_redis_crash_mid_burst_loses_and_duplicates_nothing(
        own_redis: RedisProcess, tmp_path: Path) -> None:
    replicas = [replica(own_redis.url, tmp_path / "a"), replica(own_redis.url, tmp_path / "b")]
    key = replicas[0].create_key("team-a", rpm=1000).record
    slowest = 0.0
    for i in range(BURST):
        if i == 500:
            own_redis.kill()
        record = AuditRecord(id=f"req-{i:05d}", ts=time.time(), key="team-a",
                             action="allow", data={"i": i})
        started = time.perf_counter()
        replicas[i % 2].audit.write(record)
        slowest = max(slowest, time.perf_counter() - started)
        if i < 600:
            time.sleep(0.0005)
    during_outage = replicas[0].health()
    refused = replicas[1].admit(key.id, key.rpm, None)
    assert not during_outage.reachable and during_outage.errors["audit"] > 0
    assert during_outage.spool_depth > 0
    assert (refused.allowed, refused.degraded) == (False, True)
    assert slowest < 0.5  # write() hands over; it never waited on the dead Redis

    own_redis.start()  # the spools start draining within retry_s …
    deadline = time.monotonic() + 10
    while stream_length(own_redis.url) < 700 and time.monotonic() < deadline:
        time.sleep(0.001)
    own_redis.kill()  # … and Redis dies again half way through
    caught_mid_drain = len(stream_ids_after_restart(own_redis))
    assert all(r.audit.flush(30) for r in replicas)

    counts = collections.Counter(stream_ids(own_redis.url))
    assert [i for i, n in counts.items() if n > 1] == []
    assert sorted(counts) == [f"req-{i:05d}" for i in range(BURST)]
    assert caught_mid_drain < BURST  # the second crash did interrupt the write-back
    exported = [r.id for r in replicas[1].export_audit(AuditQuery())]
    assert len(exported) == BURST
    assert all(r.health().spool_depth == 0 and r.health().reachable for r in replicas)
    for r in replicas:
        r.close()


def stream_ids_after_restart(server: RedisProcess) -> list[str]:
    """Restart Redis and read the trail before the writers' next retry reaches it."""
    server.start()
    return stream_ids(server.url)
