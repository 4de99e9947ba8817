"""The tokens a request's trace counts for its key's ``tpm``: once an upstream call is made, at
least its messages are charged, however the call ended (answered, failed, or left by its
client before the first reply chunk), and what a chat request may cost before it is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.client_keys import token_need
from proxy.stages import TimedUpstream, Trace, start_trace
from proxy.token_estimate import IMAGE_TOKENS, estimated_tokens
from proxy.upstream import Chunk, Completion

PARAMS: dict[str, Any] = {"model": "stub", "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "word " * 300},
                                 {"type": "image_url", "image_url": {"url": "data:a/b;base64,"
                                                                            + "x+/" * 1000}}]}]}
PROMPT_TOKENS = 3 + 1500 // 4 + IMAGE_TOKENS  # "Be brief.", the words' bytes / 4, the image's
# fixed cost (its bytes are not text)


class HangingUpstream:
    """An upstream that has the request and never answers (or fails when told to)."""

    def __init__(self, fail: bool = False) -> None:
        self.called = asyncio.Event()
        self.fail = fail

    def serves(self, model: str) -> bool:
        return True

    def model_names(self) -> list[str]:
        return ["stub"]

    async def complete(self, params: Any) -> Completion:
        self.called.set()
        if self.fail:
            raise ConnectionError("the upstream went away")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def stream(self, params: Any) -> AsyncIterator[Chunk]:
        self.called.set()
        if self.fail:
            raise ConnectionError("the upstream went away")
        await asyncio.Event().wait()
        yield {}


def test_the_estimate_counts_text_parts_tool_calls_and_tool_definitions() -> None:
    assert estimated_tokens(PARAMS) == PROMPT_TOKENS
    with_tools = {**PARAMS, "tools": [{"type": "function", "function": {
        "name": "lookup", "description": "Find a word", "parameters": {}}}],
        "messages": [*PARAMS["messages"], {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"w": "bread"}'}}]}]}
    extra = estimated_tokens(with_tools) - PROMPT_TOKENS
    assert extra > 20  # the definitions (their JSON) and the call's name and arguments


async def _left_before_the_reply(stream: bool, fail: bool = False) -> Trace:
    trace = start_trace()
    inner = HangingUpstream(fail)
    upstream = TimedUpstream(inner)

    async def call() -> None:
        if stream:
            async for _ in upstream.stream(PARAMS):
                pass
        else:
            await upstream.complete(PARAMS)

    task = asyncio.ensure_future(call())
    await asyncio.wait_for(inner.called.wait(), 5)
    if not fail:
        task.cancel()  # the client left: the handler's task is cancelled
    with pytest.raises((asyncio.CancelledError, ConnectionError)):
        await task
    return trace


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_left_before_its_first_reply_chunk_charges_its_messages(stream: bool) -> None:
    """The reviewer's case: a 100,000-character prompt the client dropped after 0.7 s was
    charged nothing, though the upstream had read (and billed) it."""
    trace = asyncio.run(_left_before_the_reply(stream))
    assert trace.tokens == PROMPT_TOKENS
    assert trace.replies == []  # no reply came: none is recorded


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_that_failed_charges_its_messages(stream: bool) -> None:
    trace = asyncio.run(_left_before_the_reply(stream, fail=True))
    assert trace.tokens == PROMPT_TOKENS and trace.replies == []


def test_a_request_needs_its_messages_and_its_replies() -> None:
    capped = token_need({**PARAMS, "max_tokens": 50, "n": 2}, 1000)
    assert (capped.least, capped.most) == (PROMPT_TOKENS + 100, PROMPT_TOKENS + 100)
    larger = token_need({**PARAMS, "max_tokens": 10, "max_completion_tokens": 70}, 1000)
    assert larger.least == PROMPT_TOKENS + 70  # the larger cap, whichever field
    open_ended = token_need({**PARAMS, "n": 3}, 1000)  # one token per choice, up to the ceiling
    assert (open_ended.least, open_ended.most) == (PROMPT_TOKENS + 3, PROMPT_TOKENS + 3000)


def test_a_request_without_a_reply_cap_holds_a_share_of_its_keys_tpm() -> None:
    """Not the whole window: a quarter of the key's tpm across its choices, never below a token
    a choice, and never above the ceiling; a cap the client set is held in full."""
    shared = token_need({**PARAMS, "n": 2}, 4096, tpm=1000)
    assert (shared.least, shared.most) == (PROMPT_TOKENS + 2, PROMPT_TOKENS + 2 * 125)
    assert token_need(PARAMS, 100, tpm=100_000).most == PROMPT_TOKENS + 100
    assert token_need({**PARAMS, "n": 8}, 4096, tpm=10).most == PROMPT_TOKENS + 8
    asked = token_need({**PARAMS, "max_tokens": 900}, 4096, tpm=1000)
    assert asked.least == asked.most == PROMPT_TOKENS + 900
