"""LiteLLM's Router path bounds an upstream's reply as the direct path does
(``proxy.upstream_bounds``; review of the Router path, issues 1-3).

Before the fix (the review's one-off repro figures): LiteLLM redacted an upstream's whole error text seven times over,
synchronously on the event loop (a 2 MB error body: a 502 after 63 s, every other request of
the worker waiting); a reply or a stream event of any size was read whole (80 MB: +370 MB);
and a plain reply trickled by the upstream held the request as long as each read came within
the timeout (21.5 s with a 5 s timeout). Now an error body over ``ERROR_KEPT_BYTES`` reaches
LiteLLM as its head (its ``param`` and ``code`` kept), a reply past
``upstream.max_response_bytes`` or an event past ``MAX_EVENT_BYTES`` is a 502
``upstream_too_large`` (as is an error event past ``ERROR_EVENT_BYTES``, whose message LiteLLM
redacted as an error body's), and a plain reply not read whole by its timeout a 504
``upstream_timeout``; a stream longer than its timeout is not cut.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from litellm_redaction import redacted_lengths_fixture  # noqa: F401 - a fixture
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from stub_upstream import ServerThread

from proxy.errors import GatewayError, Redactor
from proxy.settings import GatewayConfig
from proxy.upstream import LiteLLMUpstream, open_stream
from proxy.upstream_bounds import (
    ERROR_KEPT_BYTES,
    ERROR_TEXT_CHARS,
    EventSizes,
    ReplyBounds,
    ReplyTooLarge,
    bound_response,
    bounds_for,
    note_sent,
)

KEY = "sk-router-bounds-0123456789"
ASK = [{"role": "user", "content": "Tell me about bread."}]
TIMEOUT_S = 1.0
Handler = Callable[[dict[str, Any]], Awaitable[Response]]
HANDLERS: dict[str, Handler] = {}
RECEIVED: list[str] = []


def completion(content: str) -> bytes:
    return json.dumps({"id": "c-1", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}]}
                      ).encode()


def event(content: str, finish: str | None = None) -> bytes:
    chunk = {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def sse(pieces: list[bytes], delay: float = 0.0) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(delay)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


async def chat(request: Request) -> Response:
    body = json.loads(await request.body())
    RECEIVED.append(body["model"])
    return await HANDLERS[body["model"]](body)


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


def router(url: str, max_bytes: int) -> LiteLLMUpstream:
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "*", "litellm_params": {
            "model": "openai/*", "api_base": f"{url}/v1", "api_key": KEY}}],
        "router_settings": {"num_retries": 0, "timeout": TIMEOUT_S}})
    return LiteLLMUpstream(config.model_list, config.router_settings,
                           Redactor(config.secrets()), max_bytes)


def call(url: str, model: str, handler: Handler, *, stream: bool = False,
         max_bytes: int = 1_000_000) -> tuple[Any, float]:
    """What the Router path answers (a reply, the streamed chunks, or the GatewayError), and
    the longest the event loop was held meanwhile (a ticker's largest gap)."""
    HANDLERS[model] = handler
    RECEIVED.clear()
    upstream = router(url, max_bytes)
    params: dict[str, Any] = {"model": model, "messages": ASK}

    async def run() -> tuple[Any, float]:
        gaps = [0.0]
        done = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        try:
            if stream:
                chunks = await open_stream(upstream, params)
                result: Any = [c async for c in chunks]
            else:
                result = await upstream.complete(params)
        except GatewayError as error:
            result = error
        finally:
            done.set()
            await ticker
        return result, max(gaps)

    return asyncio.run(run())


def test_a_long_error_body_reaches_litellm_as_its_head(
        upstream_url: str, redacted_lengths: list[int]) -> None:
    """600 KB of error text: LiteLLM redacted all of it seven times (~1 s each, the loop held
    throughout); now it gets the head, and the loop is never held long."""
    text = json.dumps({"error": {"message": "no " * 200_000, "type": "server_error"}})

    async def failing(body: dict[str, Any]) -> Response:
        return Response(text, status_code=500, media_type="application/json")

    error, held = call(upstream_url, "error-500", failing)
    assert isinstance(error, GatewayError)
    assert (error.status, error.code) == (502, "upstream_error")
    assert RECEIVED == ["error-500"]
    assert redacted_lengths and max(redacted_lengths) < 16 * ERROR_KEPT_BYTES
    assert held < 1.5, f"the event loop was held {held:.2f} s"


def test_an_error_envelope_keeps_its_labels_when_its_message_is_cut(
        upstream_url: str, redacted_lengths: list[int]) -> None:
    """A 400 echoing a 40 KB prompt, as some servers do: its ``param`` and ``code`` still
    reach the client, as on the direct path (which parses an envelope up to 64 KiB)."""
    envelope = {"error": {"message": "bad: " + "word " * 8000, "type": "invalid_request_error",
                          "param": "messages", "code": "context_length_exceeded"}}

    async def rejecting(body: dict[str, Any]) -> Response:
        return Response(json.dumps(envelope), status_code=400, media_type="application/json")

    error, _ = call(upstream_url, "error-400", rejecting)
    assert isinstance(error, GatewayError)
    assert (error.status, error.code) == (400, "context_length_exceeded")  # a label: its code
    assert "param: messages, code: context_length_exceeded" in error.message
    assert max(redacted_lengths) < 16 * ERROR_KEPT_BYTES


@pytest.mark.parametrize("stream", [False, True])
def test_a_reply_over_max_response_bytes_is_502(upstream_url: str, stream: bool) -> None:
    async def large(body: dict[str, Any]) -> Response:
        if body.get("stream"):  # many small events: the whole stream is over the bound
            return sse([event("word ") for _ in range(99)] + [event("end", finish="stop")])
        return Response(completion("word " * 2000), media_type="application/json")

    error, _ = call(upstream_url, f"large-{stream}", large, stream=stream, max_bytes=4096)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert "upstream.max_response_bytes (4096)" in error.message
    assert RECEIVED == [f"large-{stream}"]  # refused, not retried


def test_one_stream_event_over_the_event_bound_is_502(
        upstream_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.relay.MAX_EVENT_BYTES", 1000)

    async def one_large_event(body: dict[str, Any]) -> Response:
        return sse([event("Hi"), event("word " * 400, finish="stop")])

    error, _ = call(upstream_url, "large-event", one_large_event, stream=True)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert "stream event larger than 1000 bytes" in error.message


def test_replies_within_the_bounds_are_read(upstream_url: str) -> None:
    async def answer(body: dict[str, Any]) -> Response:
        if body.get("stream"):
            return sse([event("Hello "), event("there", finish="stop")])
        return Response(completion("Hello there"), media_type="application/json")

    reply, _ = call(upstream_url, "fine", answer)
    assert reply["choices"][0]["message"]["content"] == "Hello there"
    chunks, _ = call(upstream_url, "fine", answer, stream=True)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c.get("choices")) == "Hello there"


def test_a_trickled_reply_is_504_by_its_timeout(upstream_url: str) -> None:
    """Each byte within the timeout, the whole far past it: 504 as on the direct path."""
    payload = completion("Hello there, kind friend.")

    async def trickle(body: dict[str, Any]) -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            for at in range(0, len(payload), 4):
                yield payload[at:at + 4]
                await asyncio.sleep(0.1)  # the whole: about 6 s

        return StreamingResponse(pieces(), media_type="application/json")

    started = time.monotonic()
    error, _ = call(upstream_url, "trickle", trickle)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (504, "upstream_timeout")
    assert time.monotonic() - started < 4.5  # well before the trickle ends


def test_a_stream_longer_than_its_timeout_is_not_cut(upstream_url: str) -> None:
    """The deadline is a plain reply's: a stream's reads each have the timeout instead."""
    async def slow_stream(body: dict[str, Any]) -> Response:
        return sse([event(f"w{i} ") for i in range(7)] + [event("end", finish="stop")],
                   delay=0.25)

    chunks, _ = call(upstream_url, "slow-stream", slow_stream, stream=True,
                     max_bytes=1_000_000)
    assert not isinstance(chunks, GatewayError), chunks
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c.get("choices")).endswith("end")


def test_a_long_error_event_in_a_stream_reaches_litellm_never(
        upstream_url: str, redacted_lengths: list[int]) -> None:
    """An error event of 200 KB after a first chunk: the openai SDK raises its message, which
    LiteLLM redacted whole, over and over (1 MB: 6.4 s of the loop); now such an event past
    ``ERROR_EVENT_BYTES`` ends the stream as too large before LiteLLM parses it."""
    error_event = b"data: " + json.dumps({"error": {"message": "no " * 70_000}}).encode()

    async def failing_midway(body: dict[str, Any]) -> Response:
        return sse([event("Hi"), error_event + b"\n\n"])

    error, held = call(upstream_url, "error-event", failing_midway, stream=True)
    assert isinstance(error, GatewayError), error
    assert (error.status, error.code) == (502, "upstream_too_large")
    assert "error event larger than" in error.message
    assert not redacted_lengths or max(redacted_lengths) < 16 * ERROR_KEPT_BYTES
    assert held < 1.5, f"the event loop was held {held:.2f} s"


@pytest.mark.parametrize("size", [1, 5, 4096])
def test_event_sizes_are_read_however_the_stream_is_cut(size: int) -> None:
    """Blank lines (``\\n\\n``, ``\\r\\n\\r\\n``) and the error mark straddling pieces."""
    def feed(stream: bytes, limit: int) -> None:
        sizes = EventSizes(limit)
        for at in range(0, len(stream), size):
            sizes.feed(stream[at:at + size])

    chunk = b"data: " + b"x" * 9000
    feed((chunk + b"\r\n\r\n") * 3, 9010)  # each event within the bound
    with pytest.raises(ReplyTooLarge, match="stream event larger than 8990"):
        feed((chunk + b"\n\n") * 3, 8990)
    short_error = b'data: {"error": {"message": "short"}}\n\n'
    feed(short_error + (chunk + b"\n\n") * 2, 9010)  # the mark is the error event's alone
    with pytest.raises(ReplyTooLarge, match="error event larger than"):
        feed(b'data: {"id": 1, "error": {"message": "' + b"x" * 9000 + b'"}}\n\n', 1 << 20)


@pytest.mark.parametrize("name", ["httpx", "httpx2"])
def test_responses_of_either_httpx_are_bounded(name: str) -> None:
    """The openai SDK sends with httpx2 when it builds its own client (its decoders iterate
    their pieces; httpx's return bytes): the bounds hold on both."""
    library = pytest.importorskip(name)

    def response(status: int, pieces: list[bytes], delay: float = 0.0) -> Any:
        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                await asyncio.sleep(delay)
                yield piece

        request = library.Request("POST", "http://upstream/v1/chat/completions",
                                  extensions={"timeout": {"read": 0.3}})
        asyncio.run(note_sent(request))
        return library.Response(status, headers={"content-type": "application/json"},
                                content=body(), request=request)

    async def read(reply: Any, bounds: ReplyBounds) -> bytes:
        with bounds_for(bounds):
            await bound_response(reply)
        return bytes(await reply.aread())

    with pytest.raises(ReplyTooLarge, match="max_response_bytes"):
        asyncio.run(read(response(200, [b"x" * 1000] * 5), ReplyBounds(4096)))
    long_error = json.dumps({"error": {"message": "no " * 15_000, "code": "too_long"}})
    shown = json.loads(asyncio.run(read(response(500, [long_error.encode()]),
                                        ReplyBounds(1 << 20))))
    assert shown["error"]["code"] == "too_long"
    assert len(shown["error"]["message"]) == ERROR_TEXT_CHARS
    with pytest.raises(library.ReadTimeout):
        asyncio.run(read(response(200, [b"x"] * 20, delay=0.05), ReplyBounds(deadline=True)))
    assert asyncio.run(read(response(200, [b"x"] * 5), ReplyBounds(deadline=True))) == b"x" * 5
