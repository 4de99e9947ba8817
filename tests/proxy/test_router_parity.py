"""One request reaches the upstream the same way on either path (LiteLLM's Router,
``upstream.direct: never``, and the direct path).

Before the fix the Router path sent a failing request three times when the config set no
``num_retries`` (LiteLLM's default is 2; the direct path, which takes a model only when no
retries are configured, sends it once), and dropped the client's ``user`` (LiteLLM sends it
only to models in OpenAI's own catalog; the direct path forwards it).
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
FIELDS: dict[str, Any] = {
    "user": "end-user-42", "metadata": {"team": "a"}, "temperature": 0.5, "top_p": 0.9,
    "seed": 7, "stop": ["zz"], "max_tokens": 50, "max_completion_tokens": 40, "n": 1,
    "presence_penalty": 0.1, "frequency_penalty": 0.2, "logit_bias": {"50256": -100},
    "response_format": {"type": "text"}, "store": False, "service_tier": "auto",
    "logprobs": True, "top_logprobs": 2, "reasoning_effort": "low",
    "parallel_tool_calls": False, "tool_choice": "auto", "tools": [{"type": "function",
        "function": {"name": "act", "parameters": {"type": "object", "properties": {}}}}],
}
"""Forwarded fields (``proxy.protocol.FORWARDED_FIELDS``) besides model, messages, stream."""


def config_of(stub: StubUpstream, policies: Path, **router: Any) -> GatewayConfig:
    params = {"api_base": f"{stub.url}/v1", "api_key": UPSTREAM_KEY}
    return GatewayConfig.model_validate({
        "model_list": [{"model_name": "*", "litellm_params": {"model": "openai/*", **params}}],
        "router_settings": {"timeout": 5, "disable_cooldowns": True, **router},
        "policy_dir": str(policies), "default_policy": "passthrough",
        "server": {"policy_reload_interval_s": 0},
        "store": {"path": str(policies.parent / "state" / "state.db")},
    })


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("parity") / "policies"
    target.mkdir()
    (target / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    return target


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def gateway(request: pytest.FixtureRequest, stub: StubUpstream,
            policies: Path) -> Iterator[str]:
    """No ``num_retries`` in the config."""
    with served(config_of(stub, policies), str(request.param)) as (url, _):
        yield url


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("status", "answered"), [(500, 502), (503, 502), (429, 429),
                                                  (408, 504)])
def test_a_failing_request_is_sent_once_without_configured_retries(
        gateway: str, stub: StubUpstream, status: int, answered: int, stream: bool) -> None:
    response = httpx.post(f"{gateway}/v1/chat/completions", timeout=30, json={
        "model": f"stub-status-{status}", "stream": stream, "messages": ASK})
    assert response.status_code == answered, response.text
    assert len(stub.received) == 1


def test_configured_retries_are_kept(stub: StubUpstream, policies: Path) -> None:
    """``num_retries`` set in the config is the Router's (such a model never goes direct)."""
    with served(config_of(stub, policies, num_retries=1), "litellm") as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "stub-status-500", "messages": ASK})
    assert response.status_code == 502 and len(stub.received) == 2


def sent_upstream(stub: StubUpstream, policies: Path, path: str, stream: bool,
                  ) -> dict[str, Any]:
    stub.received.clear()
    with served(config_of(stub, policies), path) as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "stub-model", "stream": stream, "messages": ASK, **FIELDS})
    assert response.status_code == 200, response.text
    assert len(stub.received) == 1
    return dict(stub.last.body)


@pytest.mark.parametrize("stream", [False, True])
def test_both_paths_send_the_upstream_the_same_fields(stub: StubUpstream, policies: Path,
                                                      stream: bool) -> None:
    bodies = {path: sent_upstream(stub, policies, path, stream) for path in UPSTREAM_PATHS}
    for body in bodies.values():
        body.setdefault("stream", False)  # LiteLLM leaves out the default
        assert body["user"] == FIELDS["user"] and body["metadata"] == FIELDS["metadata"]
        assert {k: body[k] for k in FIELDS} == FIELDS
    assert bodies["litellm"] == bodies["direct"]


def test_user_goes_in_extra_body_only_to_an_openai_attempt() -> None:
    """Elsewhere (another provider, or a fallback to one) LiteLLM maps ``user`` itself:
    decided per attempt, by the deployment LiteLLM chose (``proxy.router_fields``)."""
    from proxy.errors import Redactor
    from proxy.router_fields import for_attempt
    from proxy.settings import Deployment
    from proxy.upstream import LiteLLMUpstream

    def entry(name: str, model: str) -> Deployment:
        return Deployment(model_name=name, litellm_params={"model": model, "api_key": "k"})

    plain = [entry("a", "openai/a"), entry("c", "anthropic/claude-x")]
    params = {"model": "a", "messages": ASK, "user": "u", "extra_body": {"metadata": {"t": 1}}}
    upstream = LiteLLMUpstream(plain, {"fallbacks": [{"a": ["c"]}]}, Redactor())
    wired = upstream.wire_params(params)
    assert for_attempt({**wired, "model": "openai/a"}) == {
        "model": "openai/a", "messages": ASK, "extra_body": {"user": "u", "metadata": {"t": 1}}}
    assert params["user"] == "u"  # the caller's dict is left as it was (regenerations)
    assert for_attempt({**wired, "model": "anthropic/claude-x"})["user"] == "u"
