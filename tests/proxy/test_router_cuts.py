"""A reply the Router path cut is not fetched again by the call's retries, and its fallbacks
are still sent (``proxy.upstream_bounds.Call``).

Before the fixes (a stub upstream): a plain reply cut by its deadline (504) was fetched again
by each Router retry (``num_retries: 2``: three requests, 8.5 s under a 1 s timeout), while a
fallback whose URL and body equal the cut request's (another model name on the same server
and model, with another key) was refused as if it were a retry, so the fallback never served.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from stub_upstream import ServerThread

from proxy.errors import GatewayError, Redactor
from proxy.settings import GatewayConfig
from proxy.upstream import LiteLLMUpstream
from proxy.upstream_bounds import attempt

Handler = Callable[[Request], Awaitable[Response]]
HANDLER: list[Handler] = []
RECEIVED: list[str] = []  # the key of each request the upstream received


def completion(content: str) -> bytes:
    return json.dumps({"id": "c-1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}]}
                      ).encode()


def trickled(payload: bytes) -> StreamingResponse:
    """The reply a few bytes every 0.1 s: each read well within a 1 s timeout, the whole not."""
    async def pieces() -> AsyncIterator[bytes]:
        for at in range(0, len(payload), 4):
            yield payload[at:at + 4]
            await asyncio.sleep(0.1)

    return StreamingResponse(pieces(), media_type="application/json")


async def chat(request: Request) -> Response:
    RECEIVED.append(request.headers.get("authorization", "").removeprefix("Bearer "))
    return await HANDLER[0](request)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Router's backoff between retries, not the gateway's, is skipped here."""
    from litellm.router_python_host import PythonHost

    monkeypatch.setattr(PythonHost, "sleep", lambda self, seconds: asyncio.sleep(0))


def deployment(name: str, url: str, key: str, timeout: float = 1.0) -> dict[str, Any]:
    """Every deployment here sends the same model to the same server: the same URL and body."""
    return {"model_name": name, "litellm_params": {
        "model": "openai/m", "api_base": f"{url}/v1", "api_key": key, "timeout": timeout}}


def call(handler: Handler, model_list: list[dict[str, Any]], router_settings: dict[str, Any],
         max_bytes: int = 1_000_000) -> Any:
    """The Router path's plain reply, or its GatewayError."""
    HANDLER[:] = [handler]
    RECEIVED.clear()
    config = GatewayConfig.model_validate({"model_list": model_list,
                                           "router_settings": router_settings})
    upstream = LiteLLMUpstream(config.model_list, config.router_settings,
                               Redactor(config.secrets()), max_bytes)
    params = {"model": model_list[0]["model_name"], "messages": [{"role": "user", "content": "hi"}]}

    async def run() -> Any:
        try:
            return await upstream.complete(params)
        except GatewayError as error:
            return error

    return asyncio.run(run())


def test_a_reply_cut_by_its_deadline_is_not_fetched_again_by_retries(upstream_url: str) -> None:
    async def trickling(request: Request) -> Response:
        return trickled(completion("Hello there, kind friend."))

    error = call(trickling, [deployment("slow", upstream_url, "sk-A")], {"num_retries": 2})
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (504, "upstream_timeout")
    assert RECEIVED == ["sk-A"]


def test_a_fallback_sending_the_same_url_and_body_serves(upstream_url: str) -> None:
    """The primary's reply is too large; its fallback (another key) answers."""
    async def by_key(request: Request) -> Response:
        large = request.headers["authorization"].endswith("sk-A")
        return Response(completion("word " * 2000 if large else "fine"),
                        media_type="application/json")

    reply = call(by_key, [deployment("primary", upstream_url, "sk-A"),
                          deployment("backup", upstream_url, "sk-B")],
                 {"fallbacks": [{"primary": ["backup"]}]}, max_bytes=4096)
    assert not isinstance(reply, GatewayError), reply
    assert reply["choices"][0]["message"]["content"] == "fine"
    assert RECEIVED == ["sk-A", "sk-B"]


def test_a_fallback_with_a_longer_timeout_is_sent_after_a_deadline_cut(upstream_url: str) -> None:
    """Same key, URL and body: the fallback differs in its timeout alone, and is sent."""
    async def first_trickles(request: Request) -> Response:
        if len(RECEIVED) == 1:
            return trickled(completion("Hello there, kind friend."))
        return Response(completion("fine"), media_type="application/json")

    reply = call(first_trickles, [deployment("primary", upstream_url, "sk-A"),
                                  deployment("patient", upstream_url, "sk-A", timeout=5.0)],
                 {"fallbacks": [{"primary": ["patient"]}]})
    assert not isinstance(reply, GatewayError), reply
    assert reply["choices"][0]["message"]["content"] == "fine"
    assert RECEIVED == ["sk-A", "sk-A"]


def test_a_retry_is_known_by_all_it_repeats() -> None:
    """A retry repeats the URL, body, headers (but the openai SDK's retry count) and timeouts
    of its request; a fallback differs in one of them."""
    def request(key: str = "sk-A", retry: str = "0", read: float = 1.0) -> httpx.Request:
        return httpx.Request("POST", "http://upstream/v1/chat/completions", content=b"{}",
                             headers={"authorization": f"Bearer {key}",
                                      "x-stainless-retry-count": retry},
                             extensions={"timeout": {"read": read}})

    assert attempt(request()) == attempt(request(retry="1"))
    assert attempt(request()) != attempt(request(key="sk-B"))
    assert attempt(request()) != attempt(request(read=5.0))
