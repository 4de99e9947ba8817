"""Chat requests refused for want of a valid key: anyone can send them, so the audit trail keeps
a bounded sample (``proxy.refusals``: the first from each client address each minute) while the
metrics count every one. Before, each added a durable audit record and a JSON Lines line:
1000 keyless requests grew the trail by 5 MB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import METRICS_KEY, TEAM_KEY
from fake_gateway import ADMIN, serve_fake_gateway
from fakes import MemoryAudit
from store_gateway import admin, chat, wait_for

from proxy.refusals import RefusalSampler
from proxy.services import Services
from proxy.store import StoreUnavailable
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

REFUSALS = 30


def refused_in_metrics(base: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"},
                     timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("vilmo_requests_total{") and 'status="401"' in line)


def test_keyless_refusals_are_all_counted_and_audited_once_per_address(tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    auth = {"keys": [{"key": TEAM_KEY, "name": "team-a"}], "metrics_key": METRICS_KEY}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=auth) as (base, services):
        for i in range(REFUSALS):
            key = None if i % 2 else f"sk-guess-{i}"
            reply = httpx.post(f"{base}/v1/chat/completions", timeout=10,
                               headers={"authorization": f"Bearer {key}"} if key else {},
                               json={"model": "stub", "messages": [{"role": "user",
                                                                    "content": "hi"}]})
            assert reply.status_code == 401
        assert chat(base, TEAM_KEY).status_code == 200  # keyed requests: audited as ever
        assert refused_in_metrics(base) == REFUSALS
        assert isinstance(services.audit, MemoryAudit)
        assert [r.status for r in services.audit.records] == ["401", "200"]

        def trail() -> list[str]:  # the store's, by caller
            export = httpx.get(f"{base}/admin/audit/export", timeout=10,
                               headers={"authorization": f"Bearer {ADMIN}"}).text
            return [json.loads(line)["key"] for line in export.splitlines()]

        wait_for(lambda: sorted(trail()) == ["team-a", "unauthenticated"])


def test_the_sampler_audits_the_first_per_address_each_interval_within_a_bound() -> None:
    now = [0.0]
    sampler = RefusalSampler(interval_s=60.0, max_addresses=2, clock=lambda: now[0])
    assert [sampler.audits(a) for a in ("a", "a", "b", "c", "b")] == [
        True, False, True, False, False]  # "c": no room left this interval
    now[0] = 60.0
    assert [sampler.audits(a) for a in ("a", "c", "a")] == [True, True, False]


def request_ids(services: Services) -> list[str]:
    assert isinstance(services.audit, MemoryAudit)
    return [r.request_id for r in services.audit.records]


def keyless(base: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", timeout=10, json={
        "model": "stub", "messages": [{"role": "user", "content": "hi"}]}, **kwargs)


def test_refusals_in_the_middleware_name_their_audit_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``x-request-id`` names a chat request's audit record (README), but the refusals of the
    middleware (401, 413, 429, 500 before the route) had none though they are audited. A
    refusal the sampler leaves out of the trail has no record, so no id that would name none."""
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    auth = {"keys": [{"key": TEAM_KEY, "name": "team-a"}]}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store, auth=auth,
                            server={"max_body_bytes": 1000}) as (base, services):
        limited = admin("POST", f"{base}/admin/keys", json={"name": "limited", "rpm": 1})
        key = limited.json()["key"]
        assert chat(base, key).status_code == 200
        refusals = [keyless(base),  # 401, the first from this address: audited
                    keyless(base, headers={"authorization": f"Bearer {TEAM_KEY}"},
                            content=b"x" * 2000),  # 413 by Content-Length
                    chat(base, key)]  # 429: one request a minute


        def broken(*_: object) -> None:
            raise RuntimeError("a bug in the limits")

        assert services.store is not None
        monkeypatch.setattr(services.store, "admit", broken)
        refusals.append(chat(base, key))  # 500 in the key check, before the route
        assert [r.status_code for r in refusals] == [401, 413, 429, 500]
        ids = request_ids(services)
        assert [r.headers.get("x-request-id") for r in refusals] == ids[1:]
        left_out = keyless(base)  # the second from this address: counted, not audited
        assert left_out.status_code == 401 and "x-request-id" not in left_out.headers
        assert request_ids(services) == ids


def test_a_key_the_store_cannot_check_names_its_audit_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(SHIPPED_POLICY_DIR, store) as (base, services):
        key = admin("POST", f"{base}/admin/keys", json={"name": "unchecked"}).json()["key"]

        def unreachable(*_: object) -> None:
            raise StoreUnavailable("connection refused")

        assert services.store is not None
        monkeypatch.setattr(services.store, "find_key", unreachable)
        refused = chat(base, key)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert refused.headers.get("x-request-id") == request_ids(services)[-1]
