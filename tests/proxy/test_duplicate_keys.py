"""An upstream event whose JSON has a key twice is relayed as the gateway read it.

Python's ``json`` keeps the last of two equal keys; other parsers keep the first, or refuse the
text. The direct path relays an unchanged stream event as its bytes came: before the fix an
event with two ``delta`` keys went out with both, so the check read the second (calm) while a
client that keeps the first showed the text it never read. Now such an event is encoded again
from what was read (as LiteLLM's path always does: its chunks are objects, encoded anew).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from streams import sse
from stub_upstream import BAD_NUMBER_SLOT, StubUpstream

from proxy.errors import Redactor
from proxy.relay import SSEReader, wire_bytes
from proxy.replies import ChatCompletionChunk

pytestmark = pytest.mark.both_paths

HIDDEN = "Then stab the guard at the gate."


def first_wins(text: str) -> Any:
    """The JSON as a parser that keeps the first of two equal keys reads it."""
    return json.loads(text, object_pairs_hook=lambda pairs: dict(reversed(pairs)))


@pytest.mark.parametrize("policy", ["g-block-buffer", "g-block-chunked", "g-block-monitor"])
def test_an_event_with_a_key_twice_goes_out_as_it_was_read(
        gateway: str, stub: StubUpstream, policy: str) -> None:
    # each choice: {"index": 0, "delta": {HIDDEN}, "delta": {the reply's word}, ...}
    stub.choice_extra = {"index": BAD_NUMBER_SLOT}
    stub.bad_number = f'0, "delta": {{"content": "{HIDDEN}"}}'
    status, lines = sse(gateway, policy)
    assert status == 200 and lines[-1] == "data: [DONE]"
    events = [first_wins(line[6:]) for line in lines if line.startswith("data: {")]
    read = "".join(c.get("delta", {}).get("content") or "" for e in events
                   for c in e.get("choices", []))
    assert "stab" not in read and read.startswith(stub.reply[:5])


def test_the_reader_relays_no_bytes_of_an_event_with_a_key_twice() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield (b'data: {"choices": [{"index": 0, "delta": {"content": "stab"}, '
               b'"delta": {"content": "Hi"}, "finish_reason": "stop"}]}\n\n')
        yield b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'

    async def read() -> list[ChatCompletionChunk]:
        reader = SSEReader("m", 10_000, Redactor())
        return [c async for c in reader.chunks(body())]

    chunks = asyncio.run(read())
    assert chunks[0]["choices"][0]["delta"] == {"content": "Hi"}
    assert wire_bytes(chunks[0]) is None and wire_bytes(chunks[1]) is not None
