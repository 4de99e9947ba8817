"""A key over its limits cannot flush other tenants' records out of the audit trail. Each 429
of a virtual key's rpm or tpm was a durable audit record: a key held to rpm=1 could send
refusals as fast as the gateway answers them (239 a second), and the trail, bounded by
``store.audit_max_records``, dropped everyone else's records to keep them. Now the limit
refusals are sampled per key (``proxy.refusals.LimitSampler``: the first of each key each
minute), every one is counted in the metrics, and the next audited one says how many of the key's
were left out (``suppressed``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from fake_gateway import ADMIN, serve_fake_gateway
from store_gateway import admin, audit_ids, chat, wait_for

from proxy.refusals import LimitSampler
from vilmo.policy_store import SHIPPED_POLICY_DIR

REFUSALS = 120


def refused_in_metrics(base: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {ADMIN}"},
                     timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("vilmo_requests_total{") and 'status="429"' in line)


def records(base: str, key: str) -> list[dict[str, Any]]:
    page = admin("GET", f"{base}/admin/audit", params={"key": key, "limit": "1000"}).json()
    return list(page["data"])


def test_a_rate_limited_key_leaves_one_record_a_minute_and_every_count(tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store) as (base, services):
        victim = admin("POST", f"{base}/admin/keys", json={"name": "victim"}).json()["key"]
        noisy = admin("POST", f"{base}/admin/keys", json={"name": "noisy", "rpm": 1}).json()
        assert chat(base, victim).status_code == 200
        assert chat(base, noisy["key"]).status_code == 200
        with httpx.Client(timeout=10) as client:
            refused = [client.post(f"{base}/v1/chat/completions",
                                   headers={"authorization": f"Bearer {noisy['key']}"},
                                   json={"model": "stub",
                                         "messages": [{"role": "user", "content": "hi"}]})
                       for _ in range(REFUSALS)]
        assert {r.status_code for r in refused} == {429}
        named = [r.headers.get("x-request-id") for r in refused]
        assert named[0] is not None and named[1:] == [None] * (REFUSALS - 1)
        assert refused_in_metrics(base) == REFUSALS
        wait_for(lambda: len(audit_ids(base)) == 3)
        [limited] = [r for r in records(base, "noisy") if r["id"] == named[0]]
        assert limited["data"]["status"] == "429" and "suppressed" not in limited["data"]

        now = [0.0]  # the sampler's clock, moved on by hand
        services.limit_refusals = LimitSampler(clock=lambda: now[0])
        for _ in range(5):
            assert chat(base, noisy["key"]).status_code == 429
        now[0] = 60.0  # the next minute
        latest = chat(base, noisy["key"])
        assert latest.status_code == 429
        wait_for(lambda: latest.headers["x-request-id"] in audit_ids(base))
        [carried] = [r for r in records(base, "noisy")
                     if r["id"] == latest.headers["x-request-id"]]
        assert carried["data"]["suppressed"] == 4  # the first of the five was audited


def test_a_request_over_the_keys_tpm_is_sampled_too(tmp_path: Path) -> None:
    """The route's 429 (``tpm``: the request's tokens do not fit the key's minute)."""
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store) as (base, _):
        small = admin("POST", f"{base}/admin/keys", json={"name": "small", "tpm": 50}).json()
        long = "Tell me everything about bread. " * 40
        refused = [chat(base, small["key"], long) for _ in range(20)]
        assert {(r.status_code, r.json()["error"]["code"]) for r in refused} == {(429, "tpm")}
        assert sum("x-request-id" in r.headers for r in refused) == 1
        time.sleep(0.5)
        assert len(records(base, "small")) == 1
        assert refused_in_metrics(base) == 20


def test_the_sampler_carries_what_it_left_out_to_the_keys_next_record() -> None:
    now = [0.0]
    sampler = LimitSampler(interval_s=60.0, clock=lambda: now[0])
    assert [sampler.audits(k) for k in ("a", "a", "b", "a", "b")] == [0, None, 0, None, None]
    now[0] = 30.0
    assert sampler.audits("a") is None
    now[0] = 60.0
    assert [sampler.audits(k) for k in ("a", "a", "b", "c")] == [3, None, 1, 0]
    now[0] = 120.0
    assert [sampler.audits(k) for k in ("b", "a")] == [0, 1]
