"""A client's forwarded fields never take the operator's ``extra_body`` away, on either path.

The gateway sends a client's ``user`` (to ``openai/`` models) and ``metadata`` in the call's
``extra_body``; LiteLLM's Router lays a request's arguments over the chosen deployment's, so
before the fix that ``extra_body`` replaced the configured one: vLLM's
``chat_template_kwargs``, guided decoding, ``safe_prompt``... were lost for every request with
``user`` or ``metadata`` (under ``upstream.direct: auto`` too: such a deployment always goes
through the Router). Now the two are merged per deployment, the operator's keys winning
(``proxy.operator_body``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_gateway import UPSTREAM_KEY, UPSTREAM_PATHS, served
from stub_upstream import StubUpstream

from proxy.settings import GatewayConfig

ASK = [{"role": "user", "content": "Tell me about bread."}]
TUNED = {"chat_template_kwargs": {"enable_thinking": False}, "safe_prompt": True}
PINNED = {"user": "operator-user", "metadata": {"tier": "ops"}}


def config_of(stub: StubUpstream, policies: Path) -> GatewayConfig:
    params = {"api_base": f"{stub.url}/v1", "api_key": UPSTREAM_KEY}

    def entry(name: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"model_name": name,
                "litellm_params": {"model": f"openai/{model}", "extra_body": body, **params}}

    return GatewayConfig.model_validate({
        "model_list": [entry("tuned", "tuned-model", TUNED), entry("pinned", "pinned", PINNED),
                       entry("mixed", "mixed-a", {"guided_choice": ["a"]}),
                       entry("mixed", "mixed-b", {"guided_choice": ["b"]}),
                       entry("failing", "stub-status-500", {"guided_choice": ["failing"]})],
        "router_settings": {"timeout": 5, "disable_cooldowns": True,
                            "fallbacks": [{"failing": ["tuned"]}]},
        "policy_dir": str(policies), "default_policy": "passthrough",
        "server": {"policy_reload_interval_s": 0},
        "store": {"path": str(policies.parent / "state" / "state.db")},
    })


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def gateway(request: pytest.FixtureRequest, stub: StubUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = tmp_path_factory.mktemp("extra-body") / "policies"
    policies.mkdir()
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    with served(config_of(stub, policies), str(request.param)) as (url, _):
        yield url


def sent(gateway: str, stub: StubUpstream, model: str, stream: bool,
         **fields: Any) -> dict[str, Any]:
    stub.received.clear()
    response = httpx.post(f"{gateway}/v1/chat/completions", timeout=30, json={
        "model": model, "stream": stream, "messages": ASK, **fields})
    assert response.status_code == 200, response.text
    return dict(stub.last.body)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fields", [{}, {"user": "end-user-42"}, {"metadata": {"t": "1"}},
                                    {"user": "end-user-42", "metadata": {"t": "1"}}])
def test_forwarded_fields_add_to_the_configured_extra_body(
        gateway: str, stub: StubUpstream, stream: bool, fields: dict[str, Any]) -> None:
    body = sent(gateway, stub, "tuned", stream, **fields)
    assert {k: body.get(k) for k in TUNED} == TUNED
    assert {k: body.get(k) for k in fields} == fields


@pytest.mark.parametrize("stream", [False, True])
def test_the_operators_keys_win(gateway: str, stub: StubUpstream, stream: bool) -> None:
    body = sent(gateway, stub, "pinned", stream, user="end-user-42", metadata={"t": "1"})
    assert {k: body.get(k) for k in PINNED} == PINNED


def test_each_deployment_keeps_its_own(gateway: str, stub: StubUpstream) -> None:
    """Two deployments behind one name, each with its own ``extra_body`` (LiteLLM picks)."""
    seen: dict[str, Any] = {}
    for _ in range(24):
        body = sent(gateway, stub, "mixed", False, user="end-user-42")
        assert body["user"] == "end-user-42"
        seen[body["model"]] = body.get("guided_choice")
    assert seen == {"mixed-a": ["a"], "mixed-b": ["b"]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_gets_its_own(gateway: str, stub: StubUpstream, stream: bool) -> None:
    stub.received.clear()
    response = httpx.post(f"{gateway}/v1/chat/completions", timeout=30, json={
        "model": "failing", "stream": stream, "messages": ASK, "user": "end-user-42"})
    assert response.status_code == 200, response.text
    first, answered = (dict(r.body) for r in stub.received)
    assert (first["guided_choice"], first["user"]) == (["failing"], "end-user-42")
    assert {k: answered.get(k) for k in TUNED} == TUNED and "guided_choice" not in answered
    assert answered["user"] == "end-user-42"


def test_merged_by_the_chosen_deployments_id() -> None:
    """Also a request-scoped deployment's (``original_model_id``); an id the config names
    itself that loses its ``extra_body`` on a reload is not merged any more."""
    from proxy.operator_body import keep_operator_bodies, with_operator_body

    def deployment(body: dict[str, Any] | None) -> dict[str, Any]:
        return {"litellm_params": {"model": "openai/x", **({"extra_body": body} if body else {})},
                "model_info": {"id": "named-by-config"}}

    keep_operator_bodies([deployment({"safe_prompt": True, "user": "ops"})])
    call = {"model": "openai/x", "extra_body": {"user": "u", "metadata": {"t": "1"}},
            "model_info": {"id": "other", "original_model_id": "named-by-config"}}
    assert with_operator_body(call)["extra_body"] == {
        "user": "ops", "metadata": {"t": "1"}, "safe_prompt": True}
    assert call["extra_body"] == {"user": "u", "metadata": {"t": "1"}}  # not changed in place
    keep_operator_bodies([deployment(None)])
    assert with_operator_body(call) is call
