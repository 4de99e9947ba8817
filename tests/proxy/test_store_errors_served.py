"""Store failures through the served gateway: Redis at maxmemory (noeviction) degrades a keyed
request by ``limits_on_error`` and the admin API answers 503, and a failure nothing mapped in
the key check still leaves the chat request's audit record."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fake_gateway import serve_fake_gateway
from fakes import MemoryAudit
from store_gateway import RedisProcess, admin, chat, own_redis_fixture, wait_for

from proxy.services import Services
from vilmo.policy_store import SHIPPED_POLICY_DIR

__all__ = ["own_redis_fixture"]
pytestmark = pytest.mark.slow  # a served gateway and a redis-server of the test's own


@pytest.fixture(name="served")
def served_fixture(tmp_path: Path, own_redis: RedisProcess) -> Iterator[tuple[str, Services]]:
    shutil.copytree(SHIPPED_POLICY_DIR, tmp_path / "policies")
    store: dict[str, Any] = {"url": own_redis.url, "prefix": "served", "retry_s": 0.001,
                             "spool_dir": str(tmp_path / "spool"),
                             "limits_on_error": "fail_closed"}
    with serve_fake_gateway(tmp_path / "policies", store) as served:
        yield served


def recorded(services: Services) -> list[tuple[str, str | None, str]]:
    assert isinstance(services.audit, MemoryAudit)
    return [(r.status, r.error_code, r.caller) for r in services.audit.records]


def test_redis_at_maxmemory_refuses_by_limits_on_error_and_records_it(
        served: tuple[str, Services], own_redis: RedisProcess) -> None:
    base, services = served
    key = admin("POST", f"{base}/admin/keys", json={"name": "limited", "rpm": 100}).json()["key"]
    assert chat(base, key).status_code == 200
    client = redis.Redis(port=own_redis.port)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        reply = chat(base, key)
        assert reply.status_code == 429, reply.text
        assert reply.json()["error"]["code"] == "store"
        assert "cannot be checked" in reply.json()["error"]["message"]
        assert reply.headers["retry-after"] == "1"
        wait_for(lambda: ("429", "store", "limited") in recorded(services))
        created = admin("POST", f"{base}/admin/keys", json={"name": "another"})
        assert created.status_code == 503 and created.json()["error"]["code"] == \
            "store_unavailable"
        assert services.store is not None and not services.store.health().reachable
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def test_an_unexpected_error_in_the_key_check_is_recorded(
        served: tuple[str, Services], monkeypatch: pytest.MonkeyPatch) -> None:
    base, services = served
    key = admin("POST", f"{base}/admin/keys", json={"name": "limited", "rpm": 100}).json()["key"]

    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the limits")

    assert services.store is not None
    monkeypatch.setattr(services.store, "admit", broken)
    reply = chat(base, key)
    assert reply.status_code == 500 and reply.json()["error"]["code"] == "internal_error"
    assert recorded(services) == [("500", "internal_error", "limited")]


def test_a_key_revoked_here_is_refused_during_an_outage(
        served: tuple[str, Services], own_redis: RedisProcess) -> None:
    base, _ = served
    issued = admin("POST", f"{base}/admin/keys", json={"name": "leaked"}).json()
    kept = admin("POST", f"{base}/admin/keys", json={"name": "kept"}).json()
    assert chat(base, issued["key"]).status_code == 200  # verified: remembered for outages
    assert chat(base, kept["key"]).status_code == 200
    assert admin("DELETE", f"{base}/admin/keys/{issued['id']}").status_code == 204
    own_redis.kill()
    refused = chat(base, issued["key"])
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert chat(base, kept["key"]).status_code == 200  # the outage grace of a key still valid
