"""A reply is read for the judge (``proxy.judged_text.judged``: JSON escapes decoded at every
level, bidi runs, invisible characters out; about 1 us a character) in a worker thread past
``OFF_LOOP_CHARS``, as a large input is (``proxy.inputs.checked_input``). Before the fix
``Call.checked`` read every reply on the event loop at any size: an upstream's reply is bounded
only by ``upstream.max_response_bytes`` (32 MiB), so a megabyte of escapes held every other
request of the worker for about a second. A small reply is still read on the loop."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from fakes import FakeUpstream, KeywordClassifier, fake_services, post_chat

import proxy.call
from proxy.call import Call
from proxy.chunked import windowed
from proxy.judged_text import Judged
from proxy.judged_text import judged as real_judged
from proxy.off_loop import OFF_LOOP_CHARS
from vilmo.instruct.instructions import NO_INSTRUCTION
from vilmo.instruct.principles import PrincipleBank

SENTENCE = "calm," * 800 + "."
"""4,001 characters, about 1,600 tokens and no space: one chunk of ``FakeUpstream``'s stream
(split on spaces), so a chunked stream checks its reply so far after each (window: 6 tokens)."""
REPLY = " ".join([SENTENCE] * 6)
"""24,011 characters: over ``OFF_LOOP_CHARS``; the chunked stream's first checks are under."""


def _streamed_text(body: str) -> str:
    """The content a client reads from an SSE body."""
    text = ""
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                text += (choice.get("delta") or {}).get("content") or ""
    return text


@pytest.mark.parametrize("mode", ["plain", "buffer", "chunked", "monitor"])
def test_a_large_reply_is_read_off_the_event_loop(
        policy_dir: Path, bank: PrincipleBank, monkeypatch: pytest.MonkeyPatch,
        mode: str) -> None:
    assert len(REPLY) > OFF_LOOP_CHARS > 4 * len(SENTENCE)
    reads: list[tuple[int, bool]] = []  # per read: its length, and whether on the loop's thread

    def recording(text: str, prompt: str | None = None, shown: int | None = None) -> Judged:
        reads.append((len(text), threading.current_thread() is threading.main_thread()))
        return real_judged(text, prompt, shown)

    monkeypatch.setattr(proxy.call, "judged", recording)
    upstream = FakeUpstream()
    upstream.reply = REPLY
    services = fake_services(policy_dir, bank, upstream, KeywordClassifier())
    body: dict[str, object] = {"model": "stub",
                               "messages": [{"role": "user", "content": "Say calm words."}]}
    if mode != "plain":
        body["stream"] = True
    policy = f"g-block-{'buffer' if mode == 'plain' else mode}"
    response = asyncio.run(post_chat(services, body, {"X-Vilmo-Policy": policy}))
    assert response.status_code == 200, response.text
    sent = (response.json()["choices"][0]["message"]["content"] if mode == "plain"
            else _streamed_text(response.text))
    assert sent == REPLY  # judged as before: passed whole
    assert (len(REPLY), False) in reads  # the whole reply, read off the loop
    assert all(on_loop == (size <= OFF_LOOP_CHARS) for size, on_loop in reads), reads
    if mode == "chunked":  # the partial checks under OFF_LOOP_CHARS stay on the loop
        assert (len(SENTENCE), True) in reads


def test_a_chunked_stream_cancelled_during_an_off_loop_read_sends_nothing_more(
        policy_dir: Path, bank: PrincipleBank, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that leaves while a window's check reads the reply so far in the worker
    thread: the stream ends there; the sentence that check was for never goes out, and the
    upstream is closed."""
    entered, go_on = threading.Event(), threading.Event()

    def slow(text: str, prompt: str | None = None, shown: int | None = None) -> Judged:
        if len(text) > OFF_LOOP_CHARS:
            entered.set()
            go_on.wait(10)
        return real_judged(text, prompt, shown)

    monkeypatch.setattr(proxy.call, "judged", slow)
    upstream = FakeUpstream()
    upstream.reply = REPLY
    services = fake_services(policy_dir, bank, upstream, KeywordClassifier())
    call = Call({"model": "stub", "stream": True,
                 "messages": [{"role": "user", "content": "Say calm words."}]},
                services.policies.get("g-block-chunked"), NO_INSTRUCTION)
    sent: list[str] = []

    async def leave_during_the_read() -> None:
        source = windowed(call, upstream.stream(call.params()), services.guard)

        async def client() -> None:
            async for item in source:
                if isinstance(item, dict):
                    for choice in item.get("choices", []):
                        sent.append(choice["delta"].get("content") or "")

        reading = asyncio.create_task(client())
        while not entered.is_set():
            assert not reading.done()
            await asyncio.sleep(0.005)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        go_on.set()
        assert [item async for item in source] == []  # closed: nothing more comes

    asyncio.run(leave_during_the_read())
    # The first check over OFF_LOOP_CHARS (5 sentences: the checks widen with the reply,
    # ``proxy.chunked.WIDEN``) never went; only the sentences checked before it (3) did.
    went = "".join(sent)
    assert went == " ".join([SENTENCE] * 3) and len(went) <= OFF_LOOP_CHARS
    assert upstream.streams_closed_early == 1
