"""A key limited by ``tpm`` alone is limited on every path it may call, and cannot flood the
audit trail. ``tpm`` counted the tokens a chat request holds, and nothing else: such a key sent
200 checks of 4,000 characters on ``tpm: 50`` to ``/v1/values/check`` (never charged), all
answered, and 300 malformed chat requests (400 before any token is held), each an audit record,
so the trail (``audit_max_records: 100``) kept none but its. Now a check is charged its text's
estimate (``proxy.client_keys.charge_check``), and a virtual key's requests refused before they
hold tokens are sampled as its 429s are (the first of each key and status a minute)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fake_gateway import serve_fake_gateway
from store_gateway import admin, audit_ids, chat, wait_for

from proxy.errors import InvalidRequest, KeyRateLimited
from proxy.middleware import Caller, key_refusal_sample
from proxy.outcome import Facts
from proxy.refusals import LimitSampler
from proxy.stages import start_trace
from proxy.store import VirtualKey
from vilmo.policy import Action
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.verdict import Verdict


@pytest.fixture(name="store")
def store_fixture(tmp_path: Path) -> dict[str, Any]:
    return {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}


def new_key(base: str, **limits: int) -> dict[str, Any]:
    reply = admin("POST", f"{base}/admin/keys", json={"name": "tenant", **limits})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def check(client: httpx.Client, base: str, key: str, text: str) -> httpx.Response:
    return client.post(f"{base}/v1/values/check", json={"text": text},
                       headers={"authorization": f"Bearer {key}"})


def test_checks_are_charged_to_the_keys_tpm(store: dict[str, Any]) -> None:
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store) as (base, _), \
            httpx.Client(timeout=10) as client:
        key = new_key(base, tpm=50)["key"]
        large = check(client, base, key, "x " * 2000)  # at least 1,000 tokens: can never fit
        assert large.status_code == 429 and large.json()["error"]["code"] == "tpm"
        assert "retry-after" not in large.headers and "1000 tokens" in large.text
        text = "Is it kind to tell him the truth?"  # 9 tokens as estimated, 10 with its role
        answered = [check(client, base, key, text).status_code for _ in range(8)]
        assert answered == [200] * 5 + [429] * 3
        refused = check(client, base, key, text)
        assert refused.json()["error"]["code"] == "tpm" and "retry-after" in refused.headers
        assert chat(base, key, "Tell me about bread. " * 3).status_code == 429  # one window
        metrics = admin("GET", f"{base}/metrics").text
        assert 'vilmo_limit_rejections_total{key="tenant",reason="tpm"} 6.0' in metrics


def test_a_check_on_a_key_without_tpm_is_not_charged(store: dict[str, Any]) -> None:
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store) as (base, services), \
            httpx.Client(timeout=10) as client:
        key = new_key(base, rpm=1000)
        assert check(client, base, key["key"], "hello " * 500).status_code == 200
        assert services.store is not None
        assert services.store.reserve_tokens(key["id"], 10, 10, 10).allowed  # nothing held


def test_requests_refused_before_they_hold_tokens_are_sampled_per_key(
        store: dict[str, Any]) -> None:
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store | {"audit_max_records": 100},
                            server={"max_body_bytes": 100_000}) as (base, services), \
            httpx.Client(timeout=10) as client:
        victim = new_key(base)["key"]
        assert chat(base, victim, "the victim's request").status_code == 200
        noisy = new_key(base, tpm=50)["key"]
        headers = {"authorization": f"Bearer {noisy}", "content-type": "application/json"}
        malformed = [client.post(f"{base}/v1/chat/completions", headers=headers,
                                 content=b'{"model": 1}') for _ in range(120)]
        assert {r.status_code for r in malformed} == {400}
        named = [r.headers.get("x-request-id") for r in malformed]
        assert named[0] is not None and named[1:] == [None] * 119
        too_large = [client.post(f"{base}/v1/chat/completions", headers=headers,
                                 content=b" " * 100_001) for _ in range(5)]  # Content-Length
        assert {r.status_code for r in too_large} == {413}
        assert [r.headers.get("x-request-id") is not None for r in too_large] == [
            True, False, False, False, False]  # its own status: its own first record
        unknown = [client.post(f"{base}/v1/chat/completions", headers=headers,
                               json={"model": "no-such-model", "messages": [
                                   {"role": "user", "content": "hi"}]}) for _ in range(5)]
        assert {r.status_code for r in unknown} == {404}  # after its tokens were held,
        assert sum("x-request-id" in r.headers for r in unknown) == 1  # refunded whole
        policy = [client.post(f"{base}/v1/chat/completions",
                              headers={**headers, "x-vilmo-policy": "strict-care-fairness"},
                              json={"model": "stub", "messages": [
                                  {"role": "user", "content": "hi"}]}) for _ in range(5)]
        assert {r.status_code for r in policy} == {403}
        assert sum("x-request-id" in r.headers for r in policy) == 1
        wait_for(lambda: len(audit_ids(base)) == 5)
        metrics = admin("GET", f"{base}/metrics").text
        assert 'vilmo_requests_total{' in metrics
        counted = sum(float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith("vilmo_requests_total{") and 'status="400"' in line)
        assert counted == 120  # every one in the metrics

        now = [0.0]  # the sampler's clock, moved on by hand
        services.limit_refusals = LimitSampler(clock=lambda: now[0])
        for _ in range(4):
            client.post(f"{base}/v1/chat/completions", headers=headers, content=b"[")
        now[0] = 60.0
        latest = client.post(f"{base}/v1/chat/completions", headers=headers, content=b"[")
        recorded = latest.headers["x-request-id"]
        wait_for(lambda: recorded in audit_ids(base))
        page = admin("GET", f"{base}/admin/audit", params={"limit": "100"}).json()["data"]
        [record] = [r for r in page if r["id"] == recorded]
        assert record["data"]["status"] == "400" and record["data"]["suppressed"] == 3


def test_a_config_keys_refusals_are_all_audited(store: dict[str, Any]) -> None:
    """Config keys have no limits (every request of theirs is audited): unchanged."""
    team = "sk-team-config-0123456789"
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store,
                            auth={"keys": [{"key": team, "name": "team"}]}) as (base, _), \
            httpx.Client(timeout=10) as client:
        replies = [client.post(f"{base}/v1/chat/completions", content=b"[",
                               headers={"authorization": f"Bearer {team}",
                                        "content-type": "application/json"}) for _ in range(3)]
        assert all(r.status_code == 400 and "x-request-id" in r.headers for r in replies)


def test_a_refusal_with_a_verdict_or_after_an_upstream_call_is_always_audited() -> None:
    """Only refusals nothing counted are sampled: one the value check decided (its verdict is
    what the trail is for) or that called the upstream (charged to the key) keeps its record."""
    sampler = LimitSampler()
    scope: dict[str, Any] = {
        "path": "/v1/chat/completions",
        "state": {"caller": Caller("tenant", None, False, VirtualKey("k1", "tenant", tpm=50))},
        "app": SimpleNamespace(state=SimpleNamespace(
            services=SimpleNamespace(limit_refusals=sampler)))}
    refused = InvalidRequest("refused", code="content_filter")
    judged = Facts(input=Verdict({"mft.care": 0.9}, action=Action.BLOCK))
    start_trace()
    assert [key_refusal_sample(scope, refused, judged) for _ in range(3)] == [0, 0, 0]
    assert [key_refusal_sample(scope, refused, Facts()) for _ in range(2)] == [0, None]
    start_trace().upstream = 0.2  # the upstream was called
    assert key_refusal_sample(scope, refused, Facts()) == 0
    start_trace()
    assert key_refusal_sample(scope, KeyRateLimited("over", code="rpm"), Facts()) == 0
