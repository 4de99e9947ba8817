"""A call that ends without usage (an upstream that sends none, a client that leaves before the
usage chunk, a call left or failed before its reply) is charged its estimate; for a large
request that estimate is counted in a worker thread, never on the event loop (it held a worker
0.5 s per 4 MB), and a request settled while it is still being counted is settled once it is
in (``Trace.counting``), however its task was cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import proxy.token_estimate
from proxy.client_keys import Settlement
from proxy.off_loop import OFF_LOOP_CHARS
from proxy.stages import TimedUpstream, Trace, charge_estimate, start_trace
from proxy.store import VirtualKey
from proxy.token_estimate import estimated_tokens
from proxy.upstream import Chunk, Completion

LARGE: dict[str, Any] = {"model": "stub", "messages": [
    {"role": "user", "content": "Is this a word? " * (OFF_LOOP_CHARS // 8)}]}
REPLY = "A short reply."


class NoUsageUpstream:
    """Replies (or streams one chunk, then hangs when told to) without any usage."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.streaming = asyncio.Event()

    def serves(self, model: str) -> bool:
        return True

    def model_names(self) -> list[str]:
        return ["stub"]

    async def complete(self, params: Any) -> Completion:
        return {"id": "c1", "object": "chat.completion", "created": 0, "model": "stub",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": REPLY}}]}

    async def stream(self, params: Any) -> AsyncIterator[Chunk]:
        yield {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "stub",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": REPLY}}]}
        self.streaming.set()
        if self.hang:  # the client leaves before the usage chunk
            await asyncio.Event().wait()


@pytest.fixture(name="on_loop")
def on_loop_fixture(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per text counted: was it counted on the event loop?"""
    counted: list[bool] = []
    count = proxy.token_estimate.text_tokens

    def spy(text: str) -> int:
        try:
            asyncio.get_running_loop()
            counted.append(True)
        except RuntimeError:
            counted.append(False)
        return count(text)

    monkeypatch.setattr(proxy.token_estimate, "text_tokens", spy)
    return counted


async def _answered(stream: bool) -> Trace:
    trace = start_trace()
    upstream = TimedUpstream(NoUsageUpstream())
    if stream:
        [chunk async for chunk in upstream.stream(LARGE)]
    else:
        await upstream.complete(LARGE)
    return trace


@pytest.mark.parametrize("stream", [False, True])
def test_a_large_call_without_usage_is_estimated_off_the_event_loop(
        on_loop: list[bool], stream: bool) -> None:
    trace = asyncio.run(_answered(stream))
    assert on_loop and not any(on_loop)  # counted, and only in a worker thread
    assert trace.tokens == estimated_tokens(LARGE, [REPLY]) and not trace.counting


async def _left(settle_at_once: bool, twice: bool) -> tuple[Trace, list[tuple[Any, ...]]]:
    """A stream whose client left after its first chunk (its task cancelled, ``twice``: again
    while its end is being counted, as a cancelled scope cancels every wait), settled."""
    trace = start_trace()
    trace.reserved, trace.reserved_at = 5_000, 7
    charged: list[tuple[Any, ...]] = []

    class Store:
        def charge_tokens(self, *args: Any) -> None:
            charged.append(args)

    key = VirtualKey(id="k1", name="tenant", tpm=10**6)
    settle = Settlement(Store(), key, trace)  # type: ignore[arg-type]
    inner = NoUsageUpstream(hang=True)

    async def client() -> None:
        async for _ in TimedUpstream(inner).stream(LARGE):
            pass

    task = asyncio.ensure_future(client())
    await asyncio.wait_for(inner.streaming.wait(), 5)
    task.cancel()
    if twice:
        await asyncio.sleep(0)  # in the generator's end, waiting for the count
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if settle_at_once:
        settle.after()  # the middleware's, however the request ended
    else:
        await settle.before_last()
    for _ in range(500):
        if charged:
            break
        await asyncio.sleep(0.01)
    return trace, charged


@pytest.mark.parametrize(("settle_at_once", "twice"), [(True, True), (True, False),
                                                       (False, False)])
def test_a_request_settled_while_its_estimate_is_counted_is_charged_it(
        on_loop: list[bool], settle_at_once: bool, twice: bool) -> None:
    trace, charged = asyncio.run(_left(settle_at_once, twice))
    assert not any(on_loop)
    expected = estimated_tokens(LARGE, [REPLY])
    assert trace.tokens == expected
    assert charged == [("k1", expected, 5_000, 7)]  # the estimate in, what was held out


def test_a_small_call_is_estimated_at_once(on_loop: list[bool]) -> None:
    trace = Trace()
    small = {"messages": [{"role": "user", "content": "Hi"}]}

    async def run() -> None:
        assert charge_estimate(trace, small, ["Hello"]) is None  # nothing to wait for

    asyncio.run(run())
    assert trace.tokens == estimated_tokens(small, ["Hello"]) and on_loop[0]
