"""An upstream's redirect is never followed, on either path (a gateway holds other people's
keys). LiteLLM builds its httpx clients with ``follow_redirects=True``: before the fix the
Router path followed a 307 to another origin and sent it the prompt and the configured
credential headers (``extra_headers``: httpx drops only ``Authorization`` across origins),
then relayed that origin's reply as a 200. The direct path answered 502. Now both answer the
same 502 ``upstream_malformed`` and the other origin hears nothing (``proxy.litellm_clients``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fault_gateway import UPSTREAM_KEY, UPSTREAM_PATHS, served
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from stub_upstream import ServerThread, StubUpstream

from proxy.settings import GatewayConfig

TOKEN = "tok-upstream-extra-secret-0000111"
"""A credential header the config sends with each upstream call (``extra_headers``)."""
PROMPT = "my private prompt about bread"


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[StubUpstream]:
    """Another origin, where the upstream points its redirects: it records what it got."""
    other = StubUpstream()
    with ServerThread(other.app()) as server:
        other.url = server.url
        yield other


@pytest.fixture(scope="module")
def redirecting(elsewhere: StubUpstream) -> Iterator[str]:
    """An upstream that answers every chat request with a 307 to ``elsewhere``."""

    async def chat(request: Request) -> Response:
        await request.body()
        return Response(status_code=307,
                        headers={"location": f"{elsewhere.url}/v1/chat/completions"})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


def config_of(upstream: str, policies: Path) -> GatewayConfig:
    params = {"api_base": f"{upstream}/v1", "api_key": UPSTREAM_KEY,
              "extra_headers": {"X-Upstream-Token": TOKEN}}
    return GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/stub-model",
                                                                  **params}}],
        "router_settings": {"timeout": 5, "disable_cooldowns": True},  # each case its 502
        "policy_dir": str(policies),
        "default_policy": "passthrough",
        "server": {"policy_reload_interval_s": 0},
        "store": {"path": str(policies.parent / "state" / "state.db")},
    })


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def gateway(request: pytest.FixtureRequest, redirecting: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies = tmp_path_factory.mktemp("redirects") / "policies"
    policies.mkdir()
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    with served(config_of(redirecting, policies), str(request.param)) as (url, _):
        yield url


@pytest.mark.parametrize("stream", [False, True])
def test_a_redirect_is_an_upstream_error_and_goes_nowhere(
        gateway: str, elsewhere: StubUpstream, stream: bool) -> None:
    elsewhere.reset()
    body = {"model": "stub", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    response = httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=15)
    assert elsewhere.received == [], [(r.headers, r.body) for r in elsewhere.received]
    assert response.status_code == 502, response.text
    error = json.loads(response.text)["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_malformed")
    assert TOKEN not in response.text and PROMPT not in response.text


def test_every_client_litellm_builds_follows_no_redirect_and_keeps_no_cookie() -> None:
    """The openai SDK's clients (openai/, azure/: ``BaseOpenAILLM``'s factories, sync and
    async; a stream is sent by the same client) and LiteLLM's own handlers' (every other
    provider), as LiteLLM builds them once the gateway has."""
    import asyncio

    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
    from litellm.llms.openai.common_utils import BaseOpenAILLM

    from proxy.litellm_clients import own_litellm_clients

    own_litellm_clients()
    own_litellm_clients()  # once is enough: wrapping twice changes nothing

    async def built() -> list[Any]:
        return [BaseOpenAILLM._get_async_http_client(), BaseOpenAILLM._get_sync_http_client(),
                BaseOpenAILLM.get_async_http_client(), AsyncHTTPHandler().client,
                HTTPHandler().client]

    clients = asyncio.run(built())
    assert all(client is not None for client in clients)
    assert [client.follow_redirects for client in clients if client] == [False] * 5
    for client in clients[:3]:
        assert client is not None
        client.cookies.extract_cookies(  # what httpx does with a reply's Set-Cookie
            httpx.Response(200, headers={"set-cookie": "session=a; Path=/"},
                           request=httpx.Request("GET", "http://upstream/")))
        assert not list(client.cookies.jar)


CLOUDFLARE = "gateway.ai.cloudflare.com/v1/acct/gw/azure-openai/res/"
"""An Azure api_base through Cloudflare AI Gateway: LiteLLM builds its openai SDK client with
an httpx client of its own (``OpenAIAsyncHTTPClient()``), not by ``BaseOpenAILLM``'s factories:
before the fix that client followed the 307 and the other origin got the prompt and the
gateway token (``extra_headers``), its reply relayed as a 200."""


@pytest.fixture(scope="module")
def redirecting_anything(elsewhere: StubUpstream) -> Iterator[str]:
    """An upstream that answers any POST with a 307 to ``elsewhere``."""

    async def anything(request: Request) -> Response:
        await request.body()
        return Response(status_code=307,
                        headers={"location": f"{elsewhere.url}/v1/chat/completions"})

    app = Starlette(routes=[Route("/{rest:path}", anything, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", UPSTREAM_PATHS)
def test_azure_through_cloudflare_follows_no_redirect(
        redirecting_anything: str, elsewhere: StubUpstream, tmp_path: Path, path: str,
        stream: bool) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    config = config_of(redirecting_anything, policies)
    config.model_list[0].litellm_params = {
        "model": "azure/stub-dep", "api_base": f"{redirecting_anything}/{CLOUDFLARE}",
        "api_key": UPSTREAM_KEY, "api_version": "2024-02-01",
        "extra_headers": {"cf-aig-authorization": TOKEN}}
    elsewhere.reset()
    body = {"model": "stub", "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    with served(config, path) as (url, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=15)
    assert elsewhere.received == [], [(r.headers, r.body) for r in elsewhere.received]
    assert response.status_code == 502, response.text
    assert TOKEN not in response.text and PROMPT not in response.text


def test_every_openai_sdk_client_follows_no_redirect_and_keeps_no_cookie() -> None:
    """Whatever built its httpx client: LiteLLM's ``OpenAIHTTPClient`` classes, or the SDK."""
    import httpx2
    import openai
    from litellm.llms.openai.common_utils import OpenAIAsyncHTTPClient, OpenAIHTTPClient

    from proxy.litellm_clients import own_litellm_clients

    own_litellm_clients()
    own_litellm_clients()
    sdk_clients: list[Any] = [
        openai.OpenAI(api_key="k", http_client=cast(Any, OpenAIHTTPClient())),
        openai.AsyncAzureOpenAI(api_key="k", api_version="2024-02-01",
                                base_url="http://upstream/", http_client=cast(Any, OpenAIAsyncHTTPClient())),
        openai.OpenAI(api_key="k"), openai.AsyncOpenAI(api_key="k")]
    for sdk in sdk_clients:
        assert sdk._client.follow_redirects is False
        http = httpx if isinstance(sdk._client, (httpx.Client, httpx.AsyncClient)) else httpx2
        sdk._client.cookies.extract_cookies(  # what httpx does with a reply's Set-Cookie
            http.Response(200, headers={"set-cookie": "session=a; Path=/"},
                          request=http.Request("GET", "http://upstream/")))
        assert not list(sdk._client.cookies.jar)
