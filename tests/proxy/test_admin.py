"""The admin API, virtual keys, per-key limits and the audit trail through the gateway, on the
embedded store and on the real Redis (each test runs on both)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, METRICS_KEY, TEAM_KEY, UPSTREAM_SECRET
from store_gateway import (
    ADMIN,
    admin,
    audit_ids,
    chat,
    serve_gateway,
    store_backend_fixture,
    store_config,
    wait_for,
)

__all__ = ["store_backend_fixture"]
pytestmark = pytest.mark.slow  # every test here serves the real gateway


@pytest.fixture(name="base")
def base_fixture(stub: Any, policy_dir: Path, classifier: Any,
                 store_backend: dict[str, Any]) -> Iterator[str]:
    with serve_gateway(store_config(stub.url, policy_dir, store_backend), classifier) as url:
        yield url


def new_key(base: str, **fields: Any) -> dict[str, Any]:
    reply = admin("POST", f"{base}/admin/keys", json={"name": "team-b", **fields})
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


ADMIN_ROUTES = [("POST", "/admin/keys"), ("GET", "/admin/keys"), ("GET", "/admin/keys/x"),
                ("PATCH", "/admin/keys/x"), ("DELETE", "/admin/keys/x"), ("GET", "/admin/audit"),
                ("GET", "/admin/audit/export"), ("GET", "/admin/summary")]


def test_every_admin_route_is_401_without_the_admin_key_and_403_with_a_client_key(
        base: str) -> None:
    from fastapi import FastAPI

    from proxy.admin import admin_router

    app = FastAPI()  # the list above must cover every /admin route
    app.include_router(admin_router)
    served = {(m.upper(), p) for p, v in app.openapi()["paths"].items() for m in v}
    assert {(m, p.replace("/x", "/{key_id}")) for m, p in ADMIN_ROUTES} == served
    virtual = new_key(base)["key"]
    for method, path in ADMIN_ROUTES:
        for key, status in ((None, 401), ("sk-wrong-0123456789", 401), (TEAM_KEY, 403),
                            (virtual, 403)):
            headers = {"authorization": f"Bearer {key}"} if key else {}
            reply = httpx.request(method, base + path, headers=headers, json={}, timeout=10)
            assert reply.status_code == status, (method, path, key, reply.text)
            assert reply.json()["error"]["type"] in ("authentication_error", "permission_error")


def test_a_created_key_works_is_listed_without_its_value_and_is_refused_once_revoked(
        base: str) -> None:
    created = new_key(base, rpm=100, tpm=100_000)
    assert set(created) == {"id", "name", "key", "policy", "rpm", "tpm"}
    assert created["key"].startswith("vk-") and created["rpm"] == 100
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=created["key"], max_retries=0)
    reply = client.chat.completions.create(model="stub", messages=[
        {"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    listed = admin("GET", f"{base}/admin/keys").json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert created["key"] not in json.dumps(listed)
    assert admin("DELETE", f"{base}/admin/keys/{created['id']}").status_code == 204
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "hi"}])
    assert admin("DELETE", f"{base}/admin/keys/{created['id']}").status_code == 204  # idempotent
    assert admin("DELETE", f"{base}/admin/keys/nosuchkey").status_code == 404
    assert chat(base, "vk-nosuchid-" + "a" * 43).status_code == 401


def test_a_key_over_its_rpm_gets_429_with_retry_after_in_the_openai_envelope(base: str) -> None:
    key = new_key(base, rpm=2)["key"]
    assert [chat(base, key).status_code for _ in range(2)] == [200, 200]
    refused = chat(base, key)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json()["error"] == {"message": refused.json()["error"]["message"],
                                       "type": "rate_limit_error", "param": None, "code": "rpm"}
    metrics = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"}).text
    assert 'vilmo_limit_rejections_total{key="team-b",reason="rpm"} 1.0' in metrics


def test_tokens_from_the_reply_are_charged_to_the_keys_tpm(base: str) -> None:
    key = new_key(base, tpm=30)["key"]  # the stub reports 24 tokens per reply
    assert chat(base, key).status_code == 200
    wait_for(lambda: chat(base, key).status_code == 429)  # charged after the reply


def test_binding_a_policy_and_limits_applies_to_the_next_request(base: str) -> None:
    created = new_key(base)
    assert chat(base, created["key"]).headers["x-vilmo-policy"] == "default"
    changed = admin("PATCH", f"{base}/admin/keys/{created['id']}",
                    json={"policy": "strict-care-fairness", "profile": "default", "rpm": 1})
    assert changed.status_code == 200, changed.text
    assert changed.json() | {"created_at": 0} == {
        "id": created["id"], "name": "team-b", "policy": "strict-care-fairness",
        "profile": "default", "rpm": 1, "tpm": None, "created_at": 0, "revoked_at": None}
    assert chat(base, created["key"]).headers["x-vilmo-policy"] == "strict-care-fairness"
    assert chat(base, created["key"]).status_code == 429
    unknown = admin("PATCH", f"{base}/admin/keys/{created['id']}", json={"policy": "nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "policy_not_found"
    extra = admin("POST", f"{base}/admin/keys", json={"name": "x", "admin": True})
    assert extra.status_code == 400 and "error" in extra.json()


def test_the_audit_trail_filters_pages_and_exports(base: str, stub: Any) -> None:
    key = new_key(base, policy="strict-care-fairness")["key"]
    stub.reply = "You should punch him."  # blocked by strict-care-fairness (mft.care)
    flagged = chat(base, key, f"my key is {UPSTREAM_SECRET}, how do I get even?")
    stub.reset()
    ids = [flagged.headers["x-request-id"]]
    ids += [chat(base, key).headers["x-request-id"] for _ in range(3)]
    wait_for(lambda: len(audit_ids(base, key="team-b")) == 4)
    page = admin("GET", f"{base}/admin/audit", params={"key": "team-b", "limit": "3"}).json()
    assert [r["id"] for r in page["data"]] == ids[::-1][:3] and page["next"]
    rest = admin("GET", f"{base}/admin/audit",
                 params={"key": "team-b", "limit": "3", "after": page["next"]}).json()
    assert [r["id"] for r in rest["data"]] == [ids[0]] and rest["next"] is None
    blocked = admin("GET", f"{base}/admin/audit",
                    params={"action": "block", "value": "mft.care"}).json()["data"]
    assert [r["id"] for r in blocked] == [ids[0]]
    record = blocked[0]
    assert record["key"] == "team-b" and record["policy"] == "strict-care-fairness"
    assert record["data"]["reply"] == {"text": "You should punch him.",
                                       "values": ["mft.care", "safety.violence"]}
    prompt = record["data"]["prompt"][0]["content"]
    assert UPSTREAM_SECRET not in json.dumps(record) and "[redacted]" in prompt
    assert admin("GET", f"{base}/admin/audit", params={"policy": "nope"}).json()["data"] == []
    bad = admin("GET", f"{base}/admin/audit", params={"after": "not-a-cursor"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
    assert admin("GET", f"{base}/admin/audit", params={"limit": "0"}).status_code == 400
    for route in ("audit", "audit/export"):  # a filter names one value (schemathesis found it)
        twice = admin("GET", f"{base}/admin/{route}", params=[("value", ""), ("value", "1")])
        assert twice.status_code == 400 and twice.json()["error"]["param"] == "value"
    export = admin("GET", f"{base}/admin/audit/export", params={"key": "team-b"})
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line)["id"] for line in export.text.splitlines()] == ids[::-1]


def test_the_summary_has_compliance_the_compass_and_the_flagged_requests(
        base: str, stub: Any) -> None:
    key = new_key(base, policy="strict-care-fairness")["key"]
    stub.reply = "You should punch him."
    flagged = chat(base, key, "how do I get even?").headers["x-request-id"]
    stub.reset()
    for _ in range(3):
        chat(base, key)
    wait_for(lambda: len(audit_ids(base)) == 4)
    summary = admin("GET", f"{base}/admin/summary").json()
    assert summary["requests"] == 4
    assert summary["values"]["mft.care"] == {"checked": 4, "violated": 1, "compliance": 0.75}
    assert summary["policies"]["strict-care-fairness"]["compliance"] == 0.75
    assert summary["actions"] == {"allow": 3, "block": 1}
    assert [f["id"] for f in summary["flagged"]] == [flagged]
    assert summary["flagged"][0]["scores"]["mft.care"] == pytest.approx(0.95)
    [compass] = summary["compass"]
    axes = {a["value"]: a for a in compass["axes"]}
    assert axes["mft.care"] == {"value": "mft.care", "weight": 1.0, "compliance": 0.75}
    observed = [a for a in compass["axes"] if a["compliance"] is not None]
    expected = (sum(a["weight"] * a["compliance"] for a in observed)
                / sum(a["weight"] for a in observed))
    assert compass["alignment"] == pytest.approx(expected, abs=1e-4) and compass["alignment"] < 1
    assert summary["keys"] == [{"key": "team-b", "requests": 4, "tokens": 96, "flagged": 1}]
    assert sum(b["requests"] for b in summary["series"]) == 4


def test_the_metrics_count_tokens_per_key_and_stage_latency(base: str) -> None:
    key = new_key(base)["key"]
    chat(base, key)
    chat(base, TEAM_KEY)
    httpx.post(f"{base}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
               json={"model": "no-such-model-123", "messages": [{"role": "user", "content": "x"}]})
    text = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_KEY}"}).text
    assert 'vilmo_tokens_total{key="team-b",model="stub"} 24.0' in text
    assert 'vilmo_tokens_total{key="team-a",model="stub"} 24.0' in text
    for stage in ("total", "upstream", "check", "instruction"):
        assert f'vilmo_stage_duration_seconds_count{{stage="{stage}"}}' in text
    assert "vilmo_overhead_duration_seconds_count" in text
    assert "no-such-model-123" not in text and 'model="other"' in text
    assert 'vilmo_store_spool_depth 0.0' in text
    assert 'vilmo_store_errors_total{operation="audit"} 0.0' in text
    assert 'vilmo_cache_requests_total{cache="instruction",result="hit"}' in text


def test_the_admin_api_is_off_without_an_admin_key(gateway: str) -> None:
    base = gateway.removesuffix("/v1")
    reply = httpx.get(f"{base}/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "admin_disabled"


def test_export_negatives_reads_the_trail_of_either_backend(
        base: str, stub: Any, store_backend: dict[str, Any], policy_dir: Path,
        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from proxy.export_cli import export

    key = new_key(base, policy="strict-care-fairness")["key"]
    stub.reply = "You should punch him."
    rid = chat(base, key, "how do I get even?").headers["x-request-id"]
    stub.reset()
    chat(base, key)
    wait_for(lambda: len(audit_ids(base)) == 2)
    config = tmp_path / "gateway.yaml"
    import yaml

    config.write_text(yaml.safe_dump(store_config(stub.url, policy_dir, store_backend)))
    result = CliRunner().invoke(export, ["negatives", "--format", "d2o", "--config", str(config),
                                         "--since", "2020-01-01T00:00:00Z"])
    assert result.exit_code == 0, result.output
    [sample] = [json.loads(line) for line in result.stdout.splitlines()]
    assert sample["request_id"] == rid and sample["rejected"] == "You should punch him."
    assert sample["prompt"] == [{"role": "user", "content": "how do I get even?"}]
    assert "mft.care" in sample["violated_values"]


def test_a_gateway_with_an_admin_key_is_no_open_proxy(stub: Any, policy_dir: Path,
                                                      classifier: Any, tmp_path: Path) -> None:
    config = store_config(stub.url, policy_dir, {"path": str(tmp_path / "state.db")})
    config["auth"] = {"admin_key": ADMIN}  # no config keys: only issued keys get in
    with serve_gateway(config, classifier) as base:
        assert httpx.post(f"{base}/v1/chat/completions", json={}).status_code == 401
        assert chat(base, "sk-anything-at-all").status_code == 401
        created = new_key(base)
        assert chat(base, created["key"]).status_code == 200
        admin("DELETE", f"{base}/admin/keys/{created['id']}")
        assert chat(base, created["key"]).status_code == 401
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_without_required_keys_a_revoked_virtual_key_is_still_refused(
        stub: Any, policy_dir: Path, classifier: Any, tmp_path: Path) -> None:
    from proxy.store import StoreSettings, open_store

    store_settings = {"path": str(tmp_path / "state.db")}
    store = open_store(StoreSettings.model_validate(store_settings))
    issued = store.create_key("old")
    store.revoke_key(issued.record.id)
    store.close()
    config = store_config(stub.url, policy_dir, store_settings)
    config["auth"] = {}  # local use: anonymous callers allowed
    with serve_gateway(config, classifier) as base:
        assert chat(base, "sk-anything-at-all").status_code == 200  # anonymous, as before
        assert chat(base, issued.key).status_code == 401


@pytest.mark.parametrize("mode", ["buffer", "chunked", "monitor"])
def test_streamed_replies_reach_the_trail_with_their_text_and_tokens(
        base: str, stub: Any, mode: str) -> None:
    stub.reply = "You could punch him."
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="stub", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "how do I get even?"}],
        extra_headers={"x-vilmo-policy": f"g-block-{mode}"})
    request_id = raw.headers["x-request-id"]
    list(raw.parse())
    wait_for(lambda: request_id in audit_ids(base))
    [record] = [r for r in admin("GET", f"{base}/admin/audit", params={"key": "admin"})
                .json()["data"] if r["id"] == request_id]
    assert record["data"]["reply"]["text"] == "You could punch him."
    assert "mft.care" in record["data"]["reply"]["values"]
    assert record["data"]["prompt"] == [{"role": "user", "content": "how do I get even?"}]
    assert record["data"]["tokens"] > 0
