"""Several gateways on one Redis, and a Redis that goes away mid-burst, through the gateway."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import METRICS_KEY, TEAM_KEY
from store_gateway import (
    SHARED_REDIS,
    RedisProcess,
    _delete_prefix,
    admin,
    audit_ids,
    chat,
    serve_gateway,
    store_backend_fixture,
    store_config,
    wait_for,
)

__all__ = ["store_backend_fixture"]

pytestmark = pytest.mark.slow  # served gateways with their real models


@pytest.fixture(name="replicas")
def replicas_fixture(stub: Any, policy_dir: Path, classifier: Any, tmp_path: Path,
                     ) -> Iterator[tuple[str, str]]:
    """Two gateways (each its own uvicorn server, app and store) on one Redis prefix."""
    prefix = f"vilmo-replicas-{secrets.token_hex(6)}"
    with ExitStack() as stack:
        urls = [stack.enter_context(serve_gateway(store_config(
            stub.url, policy_dir, {"url": SHARED_REDIS, "prefix": prefix,
                                   "spool_dir": str(tmp_path / f"spool-{i}")}), classifier))
            for i in range(2)]
        yield urls[0], urls[1]
    _delete_prefix(SHARED_REDIS, prefix)


def test_two_gateways_on_one_redis_share_keys_limits_and_the_audit_trail(
        replicas: tuple[str, str]) -> None:
    a, b = replicas
    created = admin("POST", f"{a}/admin/keys", json={"name": "shared", "rpm": 4}).json()
    key = created["key"]
    assert [k["id"] for k in admin("GET", f"{b}/admin/keys").json()["data"]] == [created["id"]]
    statuses = [chat(url, key).status_code for url in (a, b, a, b)]
    assert statuses == [200, 200, 200, 200]
    assert chat(b, key).status_code == 429 and chat(a, key).status_code == 429  # one budget
    ids = {r.headers["x-request-id"] for r in (chat(a, TEAM_KEY), chat(b, TEAM_KEY))}
    wait_for(lambda: ids <= set(audit_ids(a)) and ids <= set(audit_ids(b)))
    assert len(audit_ids(a, key="shared")) == 6  # four served and two refused, from both
    assert admin("DELETE", f"{a}/admin/keys/{created['id']}").status_code == 204
    assert chat(b, key).status_code == 401  # revoked on A, refused by B at once


def cache_count(base: str, cache: str, result: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"}).text
    line = f'vilmo_cache_requests_total{{cache="{cache}",result="{result}"}} '
    return float(next(x for x in text.splitlines() if x.startswith(line)).split()[-1])


def wait_for_cached_instruction(store: dict[str, Any], within_s: float = 10.0) -> None:
    """Until the shared store holds an instruction: a gateway's cache writes go through a
    background writer after the response, so on a loaded machine B could ask first."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if "path" in store:
            with sqlite3.connect(store["path"]) as db:
                found = db.execute("SELECT count(*) FROM cache WHERE name = 'instruction'"
                                   ).fetchone()[0]
        else:
            found = redis.Redis.from_url(store["url"]).zcard(f"{store['prefix']}:cache:instruction")
        if found:
            return
        time.sleep(0.05)
    raise AssertionError("the first gateway never wrote its instruction to the store")


def test_a_second_gateway_uses_the_instruction_the_first_cached(
        stub: Any, policy_dir: Path, classifier: Any, store_backend: dict[str, Any]) -> None:
    """Two gateways on one store (one SQLite file, or one Redis prefix): the prompt's
    instruction, computed by A, is read by B from the store (its cache hit in the metrics)."""
    prompt = "My coworker humiliated me in front of everyone. How do I get revenge on him?"
    with ExitStack() as stack:
        a, b = (stack.enter_context(serve_gateway(store_config(
            stub.url, policy_dir, store_backend), classifier)) for _ in range(2))
        misses = cache_count(b, "instruction", "miss")
        first = chat(a, TEAM_KEY, prompt)
        wait_for_cached_instruction(store_backend)  # A writes its cache after it answers
        second = chat(b, TEAM_KEY, prompt)
        assert first.status_code == second.status_code == 200
        assert first.headers["x-vilmo-principles"]  # values at stake: an instruction
        assert second.headers["x-vilmo-principles"] == first.headers["x-vilmo-principles"]
        assert cache_count(b, "instruction", "hit") == 1
        assert cache_count(b, "instruction", "miss") == misses
        assert cache_count(a, "instruction", "miss") >= 1


def test_redis_stopped_mid_burst_leaves_every_request_in_the_trail_exactly_once(
        stub: Any, policy_dir: Path, classifier: Any, tmp_path: Path) -> None:
    redis_server = RedisProcess(tmp_path / "redis")
    redis_server.directory.mkdir()
    redis_server.start()
    store = {"url": redis_server.url, "prefix": "vilmo", "spool_dir": str(tmp_path / "spool"),
             "retry_s": 0.2, "timeout_s": 0.5}
    try:
        with serve_gateway(store_config(stub.url, policy_dir, store), classifier) as base:
            virtual = admin("POST", f"{base}/admin/keys",
                            json={"name": "bot", "rpm": 1000}).json()["key"]
            unused = admin("POST", f"{base}/admin/keys", json={"name": "new"}).json()["key"]

            def burst(count: int) -> list[str]:
                keys = [TEAM_KEY, virtual] * (count // 2)
                with ThreadPoolExecutor(4) as pool:
                    replies = list(pool.map(lambda key: chat(base, key), keys))
                assert {r.status_code for r in replies} == {200}  # served while Redis is down
                return [r.headers["x-request-id"] for r in replies]

            sent = burst(12)
            redis_server.kill()
            sent += burst(12)  # the virtual key was verified before: served, limits fail open
            metrics = httpx.get(f"{base}/metrics",
                                headers={"authorization": f"Bearer {METRICS_KEY}"}).text
            assert "vilmo_store_reachable 0.0" in metrics
            assert "vilmo_limit_degraded_total 0.0" not in metrics
            unchecked = chat(base, unused)  # never verified: not let through; retry later
            assert unchecked.status_code == 503 and "retry-after" in unchecked.headers
            assert unchecked.json()["error"]["code"] == "store_unavailable"
            down = admin("GET", f"{base}/admin/keys")
            assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
            redis_server.start()  # same port, same AOF
            sent += burst(12)
            wait_for(lambda: len(audit_ids(base)) >= len(sent), timeout=20)
            wait_for(lambda: "vilmo_store_spool_depth 0.0" in httpx.get(
                f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"}).text)
            trail = Counter(audit_ids(base))
    finally:
        redis_server.kill()
    assert set(trail) >= set(sent)  # and the refused request of the unverified key
    assert len(trail) == len(sent) + 1
    assert max(trail.values()) == 1
