"""The Router path's bounds, second review (``proxy.upstream_events``, ``proxy.upstream_bounds``).

Before the fixes: an error event was found by the bytes ``"error"``, so an escaped key
(``"\\u0065rror"``) let a 1 MB message through to LiteLLM's redaction (7 s of a frozen loop),
while normal events over 8 KiB holding the word (a logprobs token, ``"error": null``) were
refused; an event end written as ``\\r`` | ``\\n`` | ``\\n`` was missed (events merged); a
deeply nested error body raised RecursionError in the response hook (a 400 became a retried
502, a 500 on the direct path); and a cut reply was read again on every Router retry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from litellm_redaction import redacted_lengths_fixture  # noqa: F401 - a fixture
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from stub_upstream import ServerThread

from proxy.direct import error_fields
from proxy.errors import GatewayError, Redactor
from proxy.settings import GatewayConfig
from proxy.upstream import LiteLLMUpstream, open_stream
from proxy.upstream_bounds import ERROR_KEPT_BYTES, EventSizes, ReplyTooLarge, error_body

KEY = "sk-router-events-0123456789"
Handler = Callable[[dict[str, Any]], Awaitable[Response]]
HANDLERS: dict[str, Handler] = {}
RECEIVED: list[str] = []
DEEP = b"[" * 5000 + b"]" * 5000


def chunk(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "c-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}],
        **extra,
    }


def sse(*events: bytes) -> StreamingResponse:
    async def body() -> Any:
        for event in events:
            yield event
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


def data(value: Any) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


async def chat(request: Request) -> Response:
    body = json.loads(await request.body())
    RECEIVED.append(body["model"])
    return await HANDLERS[body["model"]](body)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


def call(
    url: str,
    model: str,
    handler: Handler,
    *,
    stream: bool = False,
    retries: int = 0,
    max_bytes: int = 1_000_000,
) -> Any:
    """What the Router path answers: a reply, the streamed chunks, or the GatewayError."""
    HANDLERS[model] = handler
    RECEIVED.clear()
    config = GatewayConfig.model_validate(
        {
            "model_list": [
                {
                    "model_name": "*",
                    "litellm_params": {
                        "model": "openai/*",
                        "api_base": f"{url}/v1",
                        "api_key": KEY,
                    },
                }
            ],
            "router_settings": {"num_retries": retries, "timeout": 5},
        }
    )
    upstream = LiteLLMUpstream(
        config.model_list, config.router_settings, Redactor(config.secrets()), max_bytes
    )
    params: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}

    async def run() -> Any:
        try:
            if stream:
                return [c async for c in await open_stream(upstream, params)]
            return await upstream.complete(params)
        except GatewayError as error:
            return error

    return asyncio.run(run())


def feed(stream: bytes, size: int, limit: int = 1 << 20) -> EventSizes:
    sizes = EventSizes(limit)
    for at in range(0, len(stream), size):
        sizes.feed(stream[at : at + size])
    return sizes


ESCAPED = data({"error": {"message": "x" * 20_000}}).replace(b'"error"', b'"\\u0065rror"')
NAMES_NOT = [
    data(chunk("e " * 5000, error=None)),  # a provider's null error field
    data(
        chunk(
            "fmt.Errorf(error)",
            logprobs={"content": [{"token": "error", "logprob": -0.1, "bytes": [1] * 3000}]},
        )
    ),
]


@pytest.mark.parametrize("size", [1, 7, 1 << 16])
def test_an_error_event_is_known_by_its_json_not_its_bytes(size: int) -> None:
    with pytest.raises(ReplyTooLarge, match="error event larger than"):
        feed(ESCAPED, size)
    for event in NAMES_NOT:
        assert len(event) > 8192
        feed(event * 2, size)  # not an error: within the event bound, read


def test_an_event_end_split_as_cr_lf_lf_is_seen() -> None:
    sizes = EventSizes(30)  # three events of 20 bytes, each so split: none over 30
    for _ in range(3):
        for piece in (b"data: " + b"y" * 14 + b"\r", b"\n", b"\n"):
            sizes.feed(piece)


def test_an_escaped_error_event_never_reaches_litellm(
    upstream_url: str, redacted_lengths: list[int]
) -> None:
    async def failing(body: dict[str, Any]) -> Response:
        return sse(data(chunk("Hi")), ESCAPED)

    error = call(upstream_url, "escaped", failing, stream=True)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert not redacted_lengths or max(redacted_lengths) < 16 * ERROR_KEPT_BYTES


def test_long_normal_events_naming_error_are_served(upstream_url: str) -> None:
    async def answer(body: dict[str, Any]) -> Response:
        return sse(*NAMES_NOT)

    chunks = call(upstream_url, "word", answer, stream=True)
    assert not isinstance(chunks, GatewayError), chunks
    assert "fmt.Errorf(error)" in "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )


def test_a_deep_error_body_is_read_as_text() -> None:
    assert error_fields(DEEP)[0] == DEEP.decode()
    shown = json.loads(error_body(DEEP, len(DEEP), Redactor()))
    assert shown["error"]["message"].startswith("[[[[")


def test_a_deep_400_stays_a_400_and_is_not_retried(upstream_url: str) -> None:
    async def rejecting(body: dict[str, Any]) -> Response:
        return Response(DEEP, status_code=400, media_type="application/json")

    error = call(upstream_url, "deep", rejecting, retries=2)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (400, "upstream_bad_request")
    assert RECEIVED == ["deep"]


def test_a_cut_reply_is_not_fetched_again_by_retries(
    upstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM retries the cut (the SDK raises it as a connection error): the retries fail at
    once, sending nothing (their backoff, not the gateway's, is skipped here)."""
    from litellm.router_python_host import PythonHost

    monkeypatch.setattr(PythonHost, "sleep", lambda self, seconds: asyncio.sleep(0))

    async def large(body: dict[str, Any]) -> Response:
        return Response(json.dumps(chunk("x" * 10_000)), media_type="application/json")

    error = call(upstream_url, "large", large, retries=2, max_bytes=4096)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert RECEIVED == ["large"]
