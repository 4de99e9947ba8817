"""No request reaches LiteLLM's ``aiohttp_openai`` provider through a wildcard deployment
(``proxy.litellm_clients.refuse_unbounded_model``, ``proxy.litellm_attempts``).

A wildcard deployment lets the client's name make the model LiteLLM calls: ``model_name: "*"``
with ``model: "*"`` (LiteLLM's pass-through), or ``model_name: "*/*"`` with ``model:
"openai/*"`` (more wildcard groups than the model has ``*``: LiteLLM calls the client's name as
it came). Before the fix (the review's repro, 2026-12-01) both configs loaded and a client
asking ``aiohttp_openai/m`` was served over aiohttp, unbounded: a 10 KB reply passed
``upstream.max_response_bytes: 4096`` as a 200. Now such a name is the client's 400 before
routing (the upstream receives nothing), on both the plain and the stream path, and an attempt
LiteLLM starts with that provider anyway (a config's alias or fallback) fails at once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_gateway import served
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stub_upstream import ServerThread

from proxy.errors import GatewayError, Redactor
from proxy.settings import GatewayConfig, load_config
from proxy.upstream import LiteLLMUpstream

LIMIT = 4096
RECEIVED: list[str] = []  # the user agent of each request the upstream received


async def chat(request: Request) -> Response:
    RECEIVED.append(request.headers.get("user-agent", ""))
    body = json.loads(await request.body())
    content = "word " * 2000  # 10 KB: past LIMIT
    if body.get("stream"):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}]}
        return Response(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n",
                        media_type="text/event-stream")
    return Response(json.dumps({"id": "c", "object": "chat.completion", "created": 1,
                                "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content}}]}),
                    media_type="application/json")


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


def test_an_aiohttp_attempt_the_router_starts_anyway_fails_at_once(upstream_url: str) -> None:
    """A fallback's name the wildcard turns into ``aiohttp_openai/``: not the client's name,
    so not refused before routing; LiteLLM's attempt with it fails before anything is sent
    (before the fix aiohttp served it: a 200 of 10 KB past the limit). First in the file:
    aiohttp keeps a session per event loop, and one left by an earlier test would fail the
    call before it was sent."""
    config = GatewayConfig.model_validate({"model_list": [
        {"model_name": "fast", "litellm_params": {"model": "openai/stub-status-500",
                                                  "api_base": "http://127.0.0.1:9/v1",
                                                  "api_key": "sk-up-0123"}},
        {"model_name": "*", "litellm_params": {"model": "*", "api_base": f"{upstream_url}/v1",
                                               "api_key": "sk-up-0123"}}],
        "router_settings": {"fallbacks": [{"fast": ["aiohttp_openai/m"]}]}})
    upstream = LiteLLMUpstream(config.model_list, config.router_settings, Redactor(), LIMIT)
    RECEIVED.clear()

    async def run() -> Any:
        try:
            return await upstream.complete({"model": "fast",
                                            "messages": [{"role": "user", "content": "hi"}]})
        except GatewayError as error:
            return error

    error = asyncio.run(run())
    assert isinstance(error, GatewayError), error
    assert RECEIVED == []


def test_an_alias_the_router_turns_into_aiohttp_is_a_400(upstream_url: str) -> None:
    """A config's alias whose target the wildcard makes an ``aiohttp_openai/`` model: the
    client's name (``fast``) passes the check before routing; LiteLLM's attempt fails before
    anything is sent (before the fix aiohttp served it), a 400 that names no config model."""
    config = GatewayConfig.model_validate({"model_list": [
        {"model_name": "*", "litellm_params": {"model": "*", "api_base": f"{upstream_url}/v1",
                                               "api_key": "sk-up-0123"}}],
        "router_settings": {"model_group_alias": {"fast": "aiohttp_openai/m"},
                            "num_retries": 2}})
    upstream = LiteLLMUpstream(config.model_list, config.router_settings, Redactor(), LIMIT)
    RECEIVED.clear()

    async def run() -> Any:
        try:
            return await upstream.complete({"model": "fast",
                                            "messages": [{"role": "user", "content": "hi"}]})
        except GatewayError as error:
            return error

    error = asyncio.run(run())
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code, error.param) == (400, "invalid_request", "model")
    assert "aiohttp_openai/m" not in error.message
    assert RECEIVED == []


WILDCARDS = {
    "pass-through": {"model_name": "*", "model": "*"},
    "more groups than wildcards": {"model_name": "*/*", "model": "openai/*"},
}


def gateway_config(url: str, wildcard: dict[str, str], tmp_path: Path,
                   **params: Any) -> GatewayConfig:
    """The wildcard as a config file (loaded: every load-time check passed), served on the
    Router path with a policy that checks nothing."""
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {input: false, output: false}\n")
    extra = "".join(f", {k}: {v}" for k, v in params.items())
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"model_list:\n  - model_name: \"{wildcard['model_name']}\"\n"
        f"    litellm_params: {{model: \"{wildcard['model']}\", api_base: \"{url}/v1\", "
        f"api_key: sk-up-0123{extra}}}\n"
        f"upstream: {{max_response_bytes: {LIMIT}}}\n"
        f"policy_dir: {policies}\ndefault_policy: passthrough\n"
        f"store: {{path: {tmp_path / 'state.db'}}}\n")
    return load_config(path)


def ask(url: str, model: str, stream: bool) -> tuple[int, dict[str, Any]]:
    """The status and JSON body (of a stream that began: ``{}``)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    started = response.headers["content-type"].startswith("text/event-stream")
    return response.status_code, {} if started else response.json()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("wildcard", list(WILDCARDS))
def test_a_client_cannot_name_the_aiohttp_provider_through_a_wildcard(
        upstream_url: str, tmp_path: Path, wildcard: str, stream: bool) -> None:
    config = gateway_config(upstream_url, WILDCARDS[wildcard], tmp_path)
    with served(config, "litellm") as (url, _):
        RECEIVED.clear()
        status, body = ask(url, "aiohttp_openai/m", stream)
        assert (status, body["error"]["code"], body["error"]["param"]) == \
            (400, "invalid_request", "model"), body
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert "aiohttp" in body["error"]["message"]
        assert RECEIVED == []  # nothing sent, over aiohttp or otherwise
        status, body = ask(url, "openai/m", stream)  # the same wildcard: the openai SDK's client
        assert status == 200, body
        assert len(RECEIVED) == 1 and RECEIVED[0].startswith("AsyncOpenAI")


def test_a_model_named_aiohttp_but_called_as_openai_is_served_bounded(
        upstream_url: str, tmp_path: Path) -> None:
    """``custom_llm_provider: openai`` decides the provider (LiteLLM's ``get_llm_provider``):
    the model ``aiohttp_openai/m`` loads (it was refused) and is called over the openai SDK,
    bounded (its 10 KB reply past the limit: 502)."""
    config = gateway_config(upstream_url, {"model_name": "fast", "model": "aiohttp_openai/m"},
                            tmp_path, custom_llm_provider="openai")
    upstream = LiteLLMUpstream(config.model_list, config.router_settings, Redactor(), LIMIT)
    RECEIVED.clear()

    async def run() -> Any:
        try:
            return await upstream.complete({"model": "fast",
                                            "messages": [{"role": "user", "content": "hi"}]})
        except GatewayError as error:
            return error

    error = asyncio.run(run())
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert len(RECEIVED) == 1 and RECEIVED[0].startswith("AsyncOpenAI")
