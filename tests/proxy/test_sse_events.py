"""The direct path's SSE reader (``proxy.relay``) reads a stream in time linear in its bytes,
however the upstream cuts it, and bounds one event.

Before the fix it searched its whole buffer for the end of an event on every piece read (and
rewrote the whole buffer for every piece with a ``\\r``): one event of a few MiB sent in 1 KiB
pieces, well under ``upstream.max_response_bytes``, held the gateway's event loop for seconds
(4 MiB: 95 s), stalling every other request of the worker. Now each piece is searched once and
one event is at most ``MAX_EVENT_BYTES`` (a 502 ``upstream_too_large`` past it). A ``\\r\\n``
split between two pieces is one line end (it was two: a blank line, ending the event early).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, SupportsIndex

import httpx
import pytest
from fault_gateway import UPSTREAM_KEY, UPSTREAM_PATHS, served
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from stub_upstream import ServerThread

from proxy import relay, sse_split
from proxy.errors import GatewayError, Redactor
from proxy.relay import SSEReader, wire_bytes
from proxy.settings import GatewayConfig

HEAD = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"')
TAIL = b'"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'


class Counted(bytearray):
    """A buffer that counts the bytes its searches and rewrites go over."""

    work = 0

    def find(self, sub: Any, start: SupportsIndex | None = None, *rest: Any) -> int:
        Counted.work += len(self) - (int(start) if start is not None else 0)
        return super().find(sub, start, *rest)

    def replace(self, old: Any, new: Any, count: SupportsIndex = -1) -> bytearray:
        Counted.work += len(self)
        return super().replace(old, new, count)


def big_event(size: int, piece: int, end: bytes = b"a") -> Iterator[bytes]:
    """One event of ``size`` bytes of text in pieces of ``piece`` bytes, each ending ``end``."""
    yield HEAD
    for _ in range(size // piece):
        yield b"a" * (piece - 1) + end
    yield TAIL


def read(parts: Iterator[bytes] | list[bytes], max_bytes: int = 64 << 20) -> list[Any]:
    async def pieces() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    async def collect() -> list[Any]:
        reader = SSEReader("m", max_bytes, Redactor())
        return [c async for c in reader.chunks(pieces())]

    return asyncio.run(collect())


def cr_lines(size: int, piece: int) -> Iterator[bytes]:
    """One event of ``size`` bytes over many data lines, each piece a line ending ``\\r``."""
    yield (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
           b'"model":"m","choices":[{"index":0,"delta":{"content":"a"},'
           b'"finish_reason":"stop"}],"pad":[0\r')
    line = b"data: " + b",0" * ((piece - 7) // 2) + b"\r"
    for _ in range(size // len(line)):
        yield line
    yield b"data: ]}\r\rdata: [DONE]\r\r"


@pytest.mark.parametrize("cut", ["text", "cr_lines"])
def test_one_big_event_in_small_pieces_is_searched_once(monkeypatch: pytest.MonkeyPatch,
                                                        cut: str) -> None:
    """Counted, not timed: the bytes the reader's buffer is searched and rewritten over.
    Before the fix, 512 KiB in 512-byte pieces cost some 270 million (each piece searched the
    whole buffer, or rewrote it for its ``\\r``); now about the stream's own size."""
    monkeypatch.setattr(sse_split, "bytearray", Counted, raising=False)
    Counted.work = 0
    size, piece = 512 * 1024, 512
    parts = list(big_event(size, piece) if cut == "text" else cr_lines(size, piece))
    chunks = read(parts)
    content = chunks[0]["choices"][0]["delta"]["content"]
    assert len(content) == (size if cut == "text" else 1)
    assert 0 < Counted.work <= sum(map(len, parts)) + 2 * len(parts)


def test_a_crlf_split_between_pieces_is_one_line_end() -> None:
    """A data field over two lines: ``\\r`` ends one piece, ``\\n`` starts the next."""
    one = b'{"id":"a","choices":[{"index":0,"delta":{"content":"x"},'
    two = b'"finish_reason":"stop"}]}'
    chunks = read([b"data: " + one + b"\r", b"\ndata: " + two + b"\r", b"\n\r", b"\n",
                   b"data: [DONE]\r\n\r\n"])
    assert len(chunks) == 1 and chunks[0]["choices"][0]["finish_reason"] == "stop"


def test_streams_read_the_same_however_they_are_cut() -> None:
    """The events (and the bytes relayed) do not depend on where the pieces end."""
    events = [b'data: {"id":"s","choices":[{"index":0,"delta":{"content":"w%d "},'
              b'"finish_reason":null}]}' % i for i in range(40)]
    events.append(b'data: {"id":"s","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    ends = [b"\n\n", b"\r\n\r\n", b"\r\r", b"\n: keep-alive\n\n"]
    whole = b"".join(e + ends[i % len(ends)] for i, e in enumerate(events)) + b"data: [DONE]\n\n"
    expected = [wire_bytes(c) for c in read([whole])]
    assert len(expected) == len(events) and None not in expected
    rng = random.Random(7)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(whole)), 60))
        parts = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
        assert [wire_bytes(c) for c in read(parts)] == expected
    assert [wire_bytes(c) for c in read([bytes([b]) for b in whole])] == expected


def test_one_event_past_the_bound_is_a_502(monkeypatch: pytest.MonkeyPatch) -> None:
    assert getattr(relay, "MAX_EVENT_BYTES", 0) >= 1 << 20  # the bound (smaller below)
    monkeypatch.setattr(relay, "MAX_EVENT_BYTES", 64 * 1024, raising=False)
    with pytest.raises(GatewayError) as caught:
        read(big_event(128 * 1024, 1024))  # never ended
    assert (caught.value.status, caught.value.code) == (502, "upstream_too_large")
    with pytest.raises(GatewayError) as caught:
        read([b"".join(big_event(128 * 1024, 1024))])  # ended, in one piece
    assert (caught.value.status, caught.value.code) == (502, "upstream_too_large")
    assert len(read(big_event(60 * 1024, 1024))) == 1


SIZE = {"bytes": 0}
"""The size of the one big event the upstream below streams."""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    async def chat(request: Request) -> StreamingResponse:
        await request.body()
        return StreamingResponse(big_event_slowly(SIZE["bytes"]),
                                 media_type="text/event-stream")

    async def big_event_slowly(size: int) -> AsyncIterator[bytes]:
        for n, part in enumerate(big_event(size, 1024)):
            yield part
            if n % 64 == 0:
                await asyncio.sleep(0)  # sent in many writes, as an upstream would

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def gateway(request: pytest.FixtureRequest, upstream: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    policies: Path = tmp_path_factory.mktemp("sse") / "policies"
    policies.mkdir()
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    params = {"api_base": f"{upstream}/v1", "api_key": UPSTREAM_KEY}
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/m",
                                                                  **params}}],
        "router_settings": {"timeout": 30, "disable_cooldowns": True},
        "policy_dir": str(policies), "default_policy": "passthrough",
        "server": {"policy_reload_interval_s": 0},
        "store": {"path": str(policies.parent / "state" / "state.db")},
    })
    with served(config, str(request.param)) as (url, _):
        yield url, str(request.param)


def stream(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "stub", "stream": True, "messages": [{"role": "user", "content": "hi"}]})


def test_a_big_event_in_pieces_is_relayed_whole(gateway: tuple[str, str]) -> None:
    SIZE["bytes"] = 512 * 1024
    response = stream(gateway[0])
    assert response.status_code == 200, response.text[:300]
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or ""
                   for e in events[:-1] if json.loads(e).get("choices"))
    assert text == "a" * SIZE["bytes"] and events[-1] == "[DONE]"


def test_an_event_past_the_bound_is_a_502_on_the_direct_path(
        gateway: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct path's bound (LiteLLM's Router reads with its own)."""
    url, path = gateway
    if path != "direct":
        pytest.skip("the bound is the direct path's reader's")
    monkeypatch.setattr(relay, "MAX_EVENT_BYTES", 256 * 1024, raising=False)
    SIZE["bytes"] = 512 * 1024
    response = stream(url)
    assert response.status_code == 502, response.text[:300]
    error = json.loads(response.text)["error"]
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_too_large")
