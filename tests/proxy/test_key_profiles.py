"""A key's bound value profile takes effect: its weights, not the policy's, score the key's
compliance (Σ w·S) and draw its radar on the dashboard. Thresholds and actions stay the
policy's. Through HTTP with the official openai client, on both stores."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fake_gateway import serve_fake_gateway
from fakes import CALM, FakeUpstream
from store_gateway import admin, audit_ids, store_backend_fixture, wait_for

from proxy.stages import TimedUpstream
from vilmo.policy_store import SHIPPED_POLICY_DIR

__all__ = ["store_backend_fixture"]
pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

CHEAT = "You could cheat on the exam; nobody checks."  # the keyword judge: mft.fairness


@pytest.fixture(name="served")
def served_fixture(tmp_path: Path, store_backend: dict[str, Any],
                   ) -> Iterator[tuple[str, FakeUpstream]]:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, policies)
    (policies / "care-first.yaml").write_text(
        "name: care-first\nvalues:\n  mft.care: {weight: 1.0, threshold: 0.99}\n"
        "  mft.fairness: {weight: 0.1, threshold: 0.99, action: block}\n")
    with serve_fake_gateway(policies, store_backend) as (url, services):
        assert isinstance(services.upstream, TimedUpstream)
        upstream = services.upstream.inner
        assert isinstance(upstream, FakeUpstream)
        yield url, upstream


def ask(base: str, key: str, upstream: FakeUpstream, reply: str) -> openai.types.chat.ChatCompletion:
    upstream.reply = reply
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=[{"role": "user", "content": "Any study tips?"}])
    assert raw.headers["x-vilmo-policy"] == "default"
    return raw.parse()


def test_the_bound_profile_weighs_the_keys_compliance_and_radar(
        served: tuple[str, FakeUpstream]) -> None:
    base, upstream = served
    keys = {}
    for name, profile in (("profiled", "care-first"), ("plain", None)):
        reply = admin("POST", f"{base}/admin/keys",
                      json={"name": name, "policy": "default", "profile": profile})
        assert reply.status_code == 201
        bound = admin("GET", f"{base}/admin/keys/{reply.json()['id']}").json()
        assert bound["profile"] == profile
        keys[name] = reply.json()["key"]
    for key in keys.values():
        for text in (CALM, CHEAT):
            completion = ask(base, key, upstream, text)
            # The policy's threshold and action (annotate), not the profile's (block at 0.99).
            assert completion.choices[0].message.content == text
    wait_for(lambda: len(audit_ids(base)) >= 4)
    summary = admin("GET", f"{base}/admin/summary").json()
    radars = {(c["policy"], c["profile"]): c for c in summary["compass"]}
    assert set(radars) == {("default", "care-first"), ("default", "default")}
    profiled = radars["default", "care-first"]
    assert [(a["value"], a["weight"], a["compliance"]) for a in profiled["axes"]] == [
        ("mft.care", 1.0, 1.0), ("mft.fairness", 0.1, 0.5)]
    assert profiled["alignment"] == pytest.approx((1.0 + 0.1 * 0.5) / 1.1, abs=1e-4)
    plain = radars["default", "default"]
    weights = {a["value"]: a["weight"] for a in plain["axes"]}
    assert weights["mft.fairness"] == 0.9 and len(weights) > 2  # the policy's own
    total = sum(a["weight"] for a in plain["axes"] if a["compliance"] is not None)
    assert plain["alignment"] == pytest.approx((total - 0.9 * 0.5) / total, abs=1e-4)
    trail = admin("GET", f"{base}/admin/audit", params={"key": "profiled"}).json()["data"]
    assert {r["data"]["profile"] for r in trail} == {"care-first"}
