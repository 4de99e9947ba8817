"""Store failures through the served gateway: at maxmemory (noeviction) a key's limits still
count and the admin API answers 503, Redis down degrades a keyed request by
``limits_on_error``, a virtual key the store cannot check is a 503 to retry (not the 401 of a
forged key), and a failure nothing mapped in the key check still leaves the chat request's
audit record."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import TEAM_KEY
from fake_gateway import ADMIN, serve_fake_gateway
from fakes import MemoryAudit
from store_gateway import RedisProcess, admin, chat, own_redis_fixture, wait_for

from proxy.client_keys import VerifiedKeys
from proxy.services import Services
from proxy.store import VirtualKey
from vilmo.policy_store import SHIPPED_POLICY_DIR

__all__ = ["own_redis_fixture"]
pytestmark = pytest.mark.slow  # a served gateway and a redis-server of the test's own


@pytest.fixture(name="served")
def served_fixture(tmp_path: Path, own_redis: RedisProcess) -> Iterator[tuple[str, Services]]:
    shutil.copytree(SHIPPED_POLICY_DIR, tmp_path / "policies")
    store: dict[str, Any] = {"url": own_redis.url, "prefix": "served", "retry_s": 0.001,
                             "spool_dir": str(tmp_path / "spool"),
                             "limits_on_error": "fail_closed"}
    auth = {"keys": [{"key": TEAM_KEY, "name": "team-a"}]}
    with serve_fake_gateway(tmp_path / "policies", store, auth=auth) as served:
        yield served


def recorded(services: Services) -> list[tuple[str, str | None, str]]:
    assert isinstance(services.audit, MemoryAudit)
    return [(r.status, r.error_code, r.caller) for r in services.audit.records]


def test_redis_at_maxmemory_keeps_limits_and_refuses_by_limits_on_error_when_down(
        served: tuple[str, Services], own_redis: RedisProcess) -> None:
    """At maxmemory the limits still count (``proxy.store.redis_lua.ALLOW_OOM``) while the
    admin API's writes are refused; once Redis is down they follow ``limits_on_error``."""
    base, services = served
    key = admin("POST", f"{base}/admin/keys", json={"name": "limited", "rpm": 2}).json()["key"]
    assert chat(base, key).status_code == 200
    client = redis.Redis(port=own_redis.port)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)
    try:
        assert chat(base, key).status_code == 200
        over = chat(base, key)
        assert over.status_code == 429 and over.json()["error"]["code"] == "rpm", over.text
        created = admin("POST", f"{base}/admin/keys", json={"name": "another"})
        assert created.status_code == 503 and created.json()["error"]["code"] == \
            "store_unavailable"
        assert services.store is not None and services.store.health().reachable  # it answers
    finally:
        client.config_set("maxmemory", 0)
        client.close()
    own_redis.kill()
    reply = chat(base, key)  # verified before: served through the outage, limits closed
    assert reply.status_code == 429, reply.text
    assert reply.json()["error"]["code"] == "store"
    assert "cannot be checked" in reply.json()["error"]["message"]
    assert reply.headers["retry-after"] == "1"
    wait_for(lambda: ("429", "store", "limited") in recorded(services))


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


def test_a_key_the_store_cannot_check_is_a_503_to_retry_not_a_401(
        served: tuple[str, Services], own_redis: RedisProcess) -> None:
    """SDKs retry a 503 with Retry-After, not a 401: a valid key is not told it is invalid
    because Redis is down. A forged key cannot be told apart then, and is not let through."""
    base, services = served
    never_used = admin("POST", f"{base}/admin/keys", json={"name": "fresh"}).json()["key"]
    own_redis.kill()
    for key in (never_used, "vk-0123456789abcdef-" + "A" * 43):
        reply = chat(base, key)
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"] == {
            "message": "this key cannot be checked now (the store is unreachable); retry in 1 s",
            "type": "store_error", "param": None, "code": "store_unavailable"}
        assert reply.headers["retry-after"] == "1"
    assert chat(base, "vk-malformed").status_code == 401  # no store needed to refuse it
    assert chat(base, TEAM_KEY).status_code == 200  # a config key needs no store
    metrics = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
    assert sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("vilmo_requests_total{") and 'status="503"' in line) == 2
    # audited: the first from this address this minute (proxy.refusals), then team-a's 200
    wait_for(lambda: [r for r in recorded(services) if r[0] in ("503", "200")] == [
        ("503", "store_unavailable", "unauthenticated"), ("200", None, "team-a")])


def test_verified_keys_keep_a_revocation_and_no_key_never_verified() -> None:
    verified = VerifiedKeys(max_keys=2)
    key = VirtualKey("a", "a", None, None, None, None, 0.0)
    verified.remember("vk-a-secret", key)
    for i in range(10):  # keys the store did not know: nothing kept, nothing pushed out
        verified.remember(f"vk-forged-{i}", None)
        assert not verified.revoked(f"vk-forged-{i}")
    assert verified.recall("vk-a-secret") == key
    verified.forget("a")
    assert verified.recall("vk-a-secret") is None and verified.revoked("vk-a-secret")
