"""A tool call's ``id`` is the gateway's, not the upstream's: each was relayed unread (an id is
no text the check reads), and each could carry a word (``proxy.reply_schema.is_id``), so the
ids of one reply's tool calls spelled a sentence the judge never read (``call_Go``,
``call_stab``, ``call_him``, ``call_tonight``), in plain replies and buffer and chunked streams
alike. Now every tool call id is replaced by one the gateway makes (``fresh_id``): the same for
each of a stream's chunks, of the upstream's length and known prefix only (Mistral's nine
letters and digits kept so, as Mistral checks the ids it gets back), and the client's next request, which sends the gateway's ids back in
its assistant and tool messages, still works upstream: it carries the whole conversation, so
the upstream never needs its own ids.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, gateway_config_dict
from fakes import upstream_services
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from streams import ASK, events
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.settings import GatewayConfig

WORDS = ["Go", "stab", "him", "tonight"]
MISTRAL = "aB3dE5fG7"  # Mistral's ids: nine letters and digits, and it takes back no other


class ToolUpstream:
    """Answers with tool calls whose ids are ``ids``, and, like OpenAI, refuses (400) a request
    whose tool message answers no tool call of an assistant message before it."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.received: list[dict[str, Any]] = []

    def calls(self) -> list[dict[str, Any]]:
        return [{"index": i, "id": tool_id, "type": "function",
                 "function": {"name": "noop", "arguments": "{}"}}
                for i, tool_id in enumerate(self.ids)]

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = await request.json()
            self.received.append(body)
            asked: set[str] = set()
            for message in body["messages"]:
                for call in message.get("tool_calls") or []:
                    asked.add(call["id"])
                if message["role"] == "tool" and message["tool_call_id"] not in asked:
                    return JSONResponse({"error": {"message": "no such tool call",
                                                   "type": "invalid_request_error"}}, 400)
            top = {"id": "chatcmpl-x", "created": 1, "model": "stub-model"}
            if not body.get("stream"):
                return JSONResponse({**top, "object": "chat.completion", "choices": [
                    {"index": 0, "finish_reason": "tool_calls" if self.ids else "stop",
                     "message": {"role": "assistant", "content": None if self.ids else "Done.",
                                 **({"tool_calls": self.calls()} if self.ids else {})}}]})

            async def chunks() -> AsyncIterator[str]:
                def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                    return "data: " + json.dumps({**top, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"
                for call in self.calls():  # the id in its first delta, and again after
                    yield chunk({"tool_calls": [{**call, "function": {"name": "noop"}}]})
                    yield chunk({"tool_calls": [{"index": call["index"], "id": call["id"],
                                                 "function": {"arguments": "{}"}}]})
                    await asyncio.sleep(0)
                yield chunk({}, "tool_calls")
                yield "data: [DONE]\n\n"
            return StreamingResponse(chunks(), media_type="text/event-stream")
        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def upstream() -> ToolUpstream:
    return ToolUpstream()


@pytest.fixture(scope="module")
def gateway_url(upstream: ToolUpstream, policy_dir: Path) -> Iterator[str]:
    with ServerThread(upstream.app()) as served_upstream:
        config = GatewayConfig.model_validate(gateway_config_dict(served_upstream.url,
                                                                  policy_dir))
        config.store.path = policy_dir.parent / "tool-ids" / "state.db"
        services = upstream_services(config, policy_dir)
        with ServerThread(create_app(config, lambda _: services)) as server:
            yield f"{server.url}/v1"


def post(url: str, policy: str, messages: Sequence[Any], stream: bool,
         ) -> httpx.Response:
    request = {"model": "stub", "messages": list(messages), "stream": stream}
    return httpx.post(f"{url}/chat/completions", json=request, timeout=60, headers={
        "Authorization": f"Bearer {ADMIN_KEY}", "X-Vilmo-Policy": policy})


def relayed_ids(response: httpx.Response, stream: bool) -> list[list[str]]:
    """Per tool call (by index), every id the client got for it, in order."""
    if not stream:
        calls = response.json()["choices"][0]["message"].get("tool_calls") or []
        return [[call["id"]] for call in calls]
    seen: dict[int, list[str]] = {}
    for event in events([line for line in response.text.splitlines() if line]):
        for choice in event.get("choices", []):
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                if call.get("id"):
                    seen.setdefault(call["index"], []).append(call["id"])
    return [seen[i] for i in sorted(seen)]


CASES = [("g-block-buffer", False), ("g-block-buffer", True), ("g-block-chunked", True),
         ("g-block-monitor", True)]


@pytest.mark.parametrize(("policy", "stream"), CASES)
def test_tool_call_ids_spell_nothing(gateway_url: str, upstream: ToolUpstream, policy: str,
                                     stream: bool) -> None:
    upstream.ids = [f"call_{word}" for word in WORDS]
    response = post(gateway_url, policy, ASK, stream)
    assert response.status_code == 200, response.text
    ids = relayed_ids(response, stream)
    assert len(ids) == len(WORDS)
    for word, got in zip(WORDS, ids, strict=True):
        assert len(set(got)) == 1, "one id per tool call across the stream's chunks"
        assert word.lower() not in got[0].lower() and got[0].startswith("call_")
    assert len({got[0] for got in ids}) == len(WORDS)


@pytest.mark.parametrize(("policy", "stream"), CASES[:3])
def test_the_gateways_ids_work_in_the_next_request(gateway_url: str, upstream: ToolUpstream,
                                                   policy: str, stream: bool) -> None:
    upstream.ids = [MISTRAL, "call_Qx7Zk2LmN9pR4sT1vW3yB5dF"]
    response = post(gateway_url, policy, ASK, stream)
    ids = [got[0] for got in relayed_ids(response, stream)]
    assert re.fullmatch(r"[A-Za-z0-9]{9}", ids[0]) and ids[0] != MISTRAL  # its shape kept
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", ids[1])
    upstream.ids = []
    follow_up = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": tool_id, "type": "function", "function": {"name": "noop", "arguments": "{}"}}
        for tool_id in ids]}, *({"role": "tool", "tool_call_id": tool_id, "content": "ok"}
                                for tool_id in ids)]
    answer = post(gateway_url, policy, follow_up, stream=False)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Done."
    sent = upstream.received[-1]["messages"]
    assert [m["tool_call_id"] for m in sent if m["role"] == "tool"] == ids


def test_fresh_ids_are_stable_within_a_process_and_keep_only_length_and_known_prefix() -> None:
    from proxy.reply_schema import fresh_id, is_id

    def make(value: str) -> str:
        return str(fresh_id("call_")(value))
    assert make("call_abc123XYZ7") == make("call_abc123XYZ7") != make("call_abc123XYZ8")
    assert re.fullmatch(r"call_[a-z0-9]{10}", make("call_abc123XYZ7"))
    assert re.fullmatch(r"toolu_[a-z0-9]{24}", make("toolu_01A09q90qw90lq917835lq9X"))
    assert re.fullmatch(r"chatcmpl-tool-[a-z0-9]{32}", make("chatcmpl-tool-" + "ab12" * 8))
    assert re.fullmatch(r"call_[a-z0-9]{17}", make("chat_gen_Resp_x7kQ9m2p"))  # words: call_
    assert re.fullmatch(r"[A-Za-z0-9]{9}", make("aB3dE6gH9"))  # Mistral's nine
    assert re.fullmatch(r"call_[0-9a-f]{24}", make("call_Go"))  # too short to keep: made anew
    assert re.fullmatch(r"call_[0-9a-f]{24}", make("I will stab you tonight, I promise"))
    assert make("") == "" and fresh_id("call_")(None) is None
    many = [make(f"call_{n:024d}") for n in range(64)]
    assert len(set(many)) == 64 and all(is_id(made) for made in many)


def test_an_upstream_chooses_nothing_of_the_ids_pattern_but_length_and_prefix() -> None:
    """Each letter's case, each digit's place and the prefix words were copied: an upstream
    spelled about seven bytes per id in letter case alone, which a client decoded exactly."""
    from proxy.reply_schema import fresh_id

    bits = "".join(f"{byte:08b}" for byte in b"stab him tonight")
    sent = ["call_" + "".join("Q" if bit == "1" else "q" for bit in bits[i:i + 56]) + "7"
            for i in range(0, len(bits), 56)]
    made = [str(fresh_id("call_")(value)) for value in sent]
    assert [len(m) for m in made] == [len(s) for s in sent]
    decoded = "".join("1" if c.isupper() else "0" for m in made for c in m[5:-1])
    assert decoded != bits[:len(decoded)]
    assert all(re.fullmatch(r"call_[a-z0-9]+", m) for m in made)


def test_a_streamed_choice_keeps_its_first_audio_id() -> None:
    """An audio id is relayed as the upstream made it (the client sends it back, and the
    upstream finds the audio by it), so each of a stream's chunks carried its own: a sentence
    spelled one chunk at a time. A choice's first is now its id throughout."""
    from streams import asking_audio

    from proxy.fields import StreamLabels, keep_allowed

    with asking_audio():
        labels = StreamLabels()
        relayed = []
        for index, word in [(0, "Go"), (0, "stab"), (1, "him"), (1, "tonight")]:
            chunk: dict[str, Any] = {"choices": [{"index": index, "delta": {
                "audio": {"id": f"audio_{word}", "transcript": "x"}}}]}
            keep_allowed(chunk, "delta", stream=labels)
            relayed.append(chunk["choices"][0]["delta"]["audio"]["id"])
    assert relayed == ["audio_Go", "audio_Go", "audio_him", "audio_him"]
