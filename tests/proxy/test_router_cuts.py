"""A reply the Router path cut is not fetched again by the call's retries, and its fallbacks
are still sent (``proxy.upstream_bounds.Call``): a retry is known by the model group, URL, body
and timeouts it targets, never by its headers.

Before the fixes (a stub upstream): a plain reply cut by its deadline (504) was fetched again
by each Router retry (``num_retries: 2``: three requests, 8.5 s under a 1 s timeout), while a
fallback whose URL and body equal the cut request's (another model name on the same server
and model, with another key) was refused as if it were a retry, so the fallback never served.
"""

from __future__ import annotations

import asyncio
import json
import uuid
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
from proxy.upstream_bounds import TARGET, attempt

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


def test_a_retry_signed_anew_is_not_sent_again(upstream_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that signs each request (Bedrock's SigV4 date and signature, OCI's ``date``,
    Copilot's fresh ``x-request-id``) sends each retry with other headers: stood in for here by
    a fresh ``x-request-id`` on every request the openai SDK builds. Before the fix each retry
    of the cut reply was sent (three requests); now once, as for any other retry."""
    from openai._base_client import AsyncAPIClient

    build = AsyncAPIClient._build_request

    def signed(self: Any, options: Any, *, retries_taken: int = 0) -> Any:
        request = build(self, options, retries_taken=retries_taken)
        request.headers["x-request-id"] = uuid.uuid4().hex
        return request

    monkeypatch.setattr(AsyncAPIClient, "_build_request", signed)

    async def large(request: Request) -> Response:
        return Response(completion("word " * 2000), media_type="application/json")

    error = call(large, [deployment("signed", upstream_url, "sk-A")], {"num_retries": 2},
                 max_bytes=4096)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert RECEIVED == ["sk-A"]


def test_a_retry_on_another_key_of_the_model_group_is_not_sent_again(upstream_url: str) -> None:
    """A key pool: one model group, two deployments on the same server and model with other
    keys. A retry of the cut reply is the same request again, whichever key it lands on
    (before: the other key's retry was sent, two requests in most calls)."""
    async def large(request: Request) -> Response:
        return Response(completion("word " * 2000), media_type="application/json")

    for _ in range(3):  # a retry lands on the other key in most calls (the Router shuffles)
        error = call(large, [deployment("pool", upstream_url, "sk-A"),
                             deployment("pool", upstream_url, "sk-B")], {"num_retries": 4},
                     max_bytes=4096)
        assert isinstance(error, GatewayError), error
        assert (error.status, error.code) == (502, "upstream_too_large")
        assert len(RECEIVED) == 1, RECEIVED


def test_a_retry_is_known_by_what_it_targets() -> None:
    """A retry repeats the model group, URL, body and timeouts of its request, whatever its
    headers (a key, a signature, a retry count); a fallback's model group differs."""
    def request(key: str = "sk-A", retry: str = "0", read: float = 1.0) -> httpx.Request:
        return httpx.Request("POST", "http://upstream/v1/chat/completions", content=b"{}",
                             headers={"authorization": f"Bearer {key}",
                                      "x-stainless-retry-count": retry,
                                      "x-amz-date": f"2026120{retry}T000000Z"},
                             extensions={"timeout": {"read": read}})

    def targeting(group: str, **kwargs: Any) -> Any:
        token = TARGET.set(group)
        try:
            return attempt(request(**kwargs))
        finally:
            TARGET.reset(token)

    assert targeting("m") == targeting("m", retry="1") == targeting("m", key="sk-B")
    assert targeting("m") != targeting("backup")
    assert targeting("m") != targeting("m", read=5.0)
