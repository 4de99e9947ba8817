"""OpenAI's own request fields (``safety_identifier``, ``verbosity``, ``web_search_options``,
...) reach only OpenAI-compatible deployments on the Router path, decided per attempt
(``proxy.router_fields``). They were sent to every deployment: to an ``anthropic/`` one,
``web_search_options`` became Anthropic's paid ``web_search`` server tool and others were sent
raw or refused; and with fallbacks beside a non-``openai/`` entry, ``verbosity`` to a plain
``openai/`` model was LiteLLM's own 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, gateway_config_dict
from fakes import upstream_services
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.router_fields import CARRIER, carried, for_attempt
from proxy.settings import GatewayConfig

FIELDS: dict[str, Any] = {
    "verbosity": "low", "safety_identifier": "u-1", "prompt_cache_key": "k",
    "prompt_cache_retention": "24h", "moderation": {"model": "omni-moderation-latest"},
    "prompt_cache_options": {"mode": "explicit"},
    "web_search_options": {"search_context_size": "high",
                           "user_location": {"type": "approximate",
                                             "approximate": {"city": "Lyon"}}}}
ANTHROPIC_REPLY = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                   "content": [{"type": "text", "text": "Hello there."}],
                   "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 3, "output_tokens": 3}}


@pytest.fixture(scope="module")
def anthropic_bodies() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A stand-in for Anthropic's API: its URL and the bodies it was sent."""
    bodies: list[dict[str, Any]] = []

    async def messages(request: Request) -> JSONResponse:
        bodies.append(await request.json())
        return JSONResponse(ANTHROPIC_REPLY)

    app = Starlette(routes=[Route("/{path:path}", messages, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url, bodies


@pytest.fixture(scope="module")
def url(stub: StubUpstream, policy_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        anthropic_bodies: tuple[str, list[dict[str, Any]]]) -> Iterator[str]:
    data = gateway_config_dict(stub.url, policy_dir, "router")
    model_list: list[dict[str, Any]] = data["model_list"]
    for name in ("claude", "claude-alone"):  # the latter without a fallback
        model_list.append({"model_name": name, "litellm_params": {
            "model": "anthropic/claude-3-5-haiku-latest", "api_base": anthropic_bodies[0],
            "api_key": "sk-ant-test"}})
    settings: dict[str, Any] = data["router_settings"]
    settings.update(disable_cooldowns=True, fallbacks=[{"claude": ["stub"]}])
    config = GatewayConfig.model_validate(data)
    config.store.path = tmp_path_factory.mktemp("fields") / "state.db"
    services = upstream_services(config, policy_dir)
    with ServerThread(create_app(config, lambda _: services)) as server:
        yield f"{server.url}/v1"


def ask(url: str, model: str, **fields: Any) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}",
                               "X-Vilmo-Policy": "g-allow-monitor"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                            **fields})


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_openai_only_fields_never_reach_an_anthropic_deployment(
        url: str, anthropic_bodies: tuple[str, list[dict[str, Any]]], name: str) -> None:
    bodies = anthropic_bodies[1]
    bodies.clear()
    response = ask(url, "claude", **{name: FIELDS[name]})
    assert response.status_code == 200, response.text
    assert len(bodies) == 1
    sent = bodies[0]
    assert "tools" not in sent  # web_search_options was Anthropic's web_search tool
    assert not set(FIELDS) & set(sent) and CARRIER not in str(sent)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_openai_only_fields_reach_an_openai_deployment_beside_fallbacks(
        url: str, stub: StubUpstream, name: str) -> None:
    response = ask(url, "stub", **{name: FIELDS[name]})
    assert response.status_code == 200, response.text
    assert stub.last.body.get(name) == FIELDS[name]
    assert CARRIER not in str(stub.last.body)


def test_user_goes_to_each_attempt_as_its_provider_takes_it() -> None:
    params = carried({"model": "m", "user": "u", "verbosity": "low", "messages": []})
    assert "verbosity" not in params and params["metadata"] == {CARRIER: {"verbosity": "low"}}
    to_openai = for_attempt({**params, "model": "openai/x", "extra_body": {"safe": 1}})
    assert to_openai["extra_body"] == {"verbosity": "low", "user": "u", "safe": 1}
    assert "user" not in to_openai and to_openai["metadata"] == {}
    to_claude = for_attempt({**params, "model": "anthropic/claude-3-5-haiku-latest"})
    assert "extra_body" not in to_claude and to_claude["user"] == "u"
    assert to_claude["metadata"] == {}
    assert params["metadata"] == {CARRIER: {"verbosity": "low"}}  # a fallback's still has them


def test_a_field_litellm_refuses_is_the_gateways_own_400_not_the_upstreams(
        url: str, anthropic_bodies: tuple[str, list[dict[str, Any]]]) -> None:
    """LiteLLM's ``UnsupportedParamsError`` is raised before any call: it read as "the
    upstream answered 400"."""
    bodies = anthropic_bodies[1]
    bodies.clear()
    response = ask(url, "claude-alone", seed=7)
    error = response.json()["error"]
    assert response.status_code == 400 and not bodies
    assert (error["code"], error["param"]) == ("unsupported_parameter", "seed")
    assert "answered" not in error["message"] and "nothing was sent upstream" in error["message"]
