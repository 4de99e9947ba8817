"""The official openai client, sync and async, streaming and not, against the running gateway."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, BOTH_PATHS, TEAM_KEY, UPSTREAM_SECRET
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from stub_upstream import StubUpstream

from vilmo.instruct.principles import PrincipleBank
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = BOTH_PATHS  # LiteLLM's Router and the direct path pass the same tests

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "My neighbour insulted me. How do I hurt him back?"}]


def phrasings() -> dict[str, str]:
    return {p.id: p.phrase("reasoned") for p in PrincipleBank.load().principles}


def test_sync_reply_reaches_client_intact_with_instruction_in_system(
        gateway: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=TEAM_KEY)
    raw = client.chat.completions.with_raw_response.create(model="stub", messages=MESSAGES)
    completion = raw.parse()

    assert completion.choices[0].message.content == stub.reply
    assert completion.id == "chatcmpl-stub1"
    assert raw.headers["x-vilmo-policy"] == "strict-care-fairness"
    principle_ids = raw.headers["x-vilmo-principles"].split(",")
    assert 1 <= len(principle_ids) <= 4
    sent = stub.last.body["messages"]
    assert sent[0]["role"] == "system"
    assert sent[1:] == MESSAGES
    # The strict policy uses the reasoned style: each chosen principle's phrasing is in it.
    for pid in principle_ids:
        if not pid.startswith("custom/"):
            assert phrasings()[pid] in sent[0]["content"]
    # The violence prompt must draw on care or violence principles.
    assert any(p.startswith(("mft.care/", "safety.violence/")) for p in principle_ids)


def test_async_stream_parses_and_ends_with_usage(gateway: str, stub: StubUpstream) -> None:
    async def run() -> tuple[str, list[openai.types.chat.ChatCompletionChunk]]:
        client = openai.AsyncOpenAI(base_url=gateway, api_key=TEAM_KEY)
        stream = await client.chat.completions.create(
            model="stub", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        await client.close()
        return text, chunks

    text, chunks = asyncio.run(run())
    assert text == stub.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert stub.last.body["messages"][0]["role"] == "system"
    assert stub.last.body["stream_options"] == {"include_usage": True}


def test_sync_stream_and_async_plain(gateway: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY)
    with client.chat.completions.with_streaming_response.create(
            model="stub", messages=MESSAGES, stream=True) as response:
        assert response.headers["x-vilmo-policy"] == "default"
        assert response.headers["x-vilmo-principles"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == stub.reply

    async def plain() -> str | None:
        async with openai.AsyncOpenAI(base_url=gateway, api_key=ADMIN_KEY) as aclient:
            completion = await aclient.chat.completions.create(model="stub", messages=MESSAGES)
        return completion.choices[0].message.content

    assert asyncio.run(plain()) == stub.reply


def test_raw_sse_ends_with_done(gateway: str) -> None:
    body = {"model": "stub", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gateway}/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {TEAM_KEY}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"


def test_user_prefix_placement_by_header(gateway: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY)
    history: list[ChatCompletionMessageParam] = [
               {"role": "system", "content": "You are terse."},
               {"role": "user", "content": "First question."},
               {"role": "assistant", "content": "First answer."},
               {"role": "user", "content": "How do I hurt a dog?"}]
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=history, extra_headers={"X-Vilmo-Policy": "prefix"})
    assert raw.headers["x-vilmo-policy"] == "prefix"
    sent = stub.last.body["messages"]
    assert sent[:3] == history[:3]  # untouched, no system message added
    assert sent[3]["content"].endswith("\n\nHow do I hurt a dog?")
    assert sent[3]["content"].startswith("Follow these values in your reply:")
    assert len(raw.headers["x-vilmo-principles"].split(",")) == 2


def test_openai_fields_pass_through_untouched(gateway: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=TEAM_KEY)
    tools: list[ChatCompletionToolParam] = [{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
    client.chat.completions.create(
        model="stub", messages=MESSAGES, seed=42, tools=tools, temperature=0.3,
        response_format={"type": "json_object"}, extra_body={"vendor_knob": {"a": [1, 2]}})
    got = stub.last.body
    assert got["seed"] == 42
    assert got["tools"] == tools
    assert got["temperature"] == 0.3
    assert got["response_format"] == {"type": "json_object"}
    assert "vendor_knob" not in got  # not an OpenAI field: see tests/proxy/test_security.py


def test_upstream_key_is_not_the_clients(gateway: str, stub: StubUpstream) -> None:
    openai.OpenAI(base_url=gateway, api_key=TEAM_KEY).chat.completions.create(
        model="stub", messages=MESSAGES)
    assert stub.last.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"


@pytest.mark.parametrize("policy", ["default", "strict-care-fairness", "schwartz-egalitarian"])
def test_every_shipped_policy_injects_principles_of_its_values(gateway: str, policy: str) -> None:
    values = set(load_policy(SHIPPED_POLICY_DIR / f"{policy}.yaml").values)
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=MESSAGES, extra_headers={"X-Vilmo-Policy": policy})
    ids = raw.headers["x-vilmo-principles"].split(",")
    assert raw.headers["x-vilmo-policy"] == policy
    assert ids and all(i.split("/")[0] in values or i.startswith("custom/") for i in ids)


def test_vilmo_generator_policy_and_missing_weights(gateway: str, stub: StubUpstream) -> None:
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model="stub", messages=[{"role": "user", "content": "How can I read my ex's messages?"}],
        extra_headers={"X-Vilmo-Policy": "learned"})
    ids = raw.headers["x-vilmo-principles"].split(",")
    assert len(ids) == 2 and ids[0].startswith("safety.privacy/")
    assert stub.last.body["messages"][0]["content"].startswith("Follow these values")
    # A policy whose generator weights do not exist never loads: it is unknown, not half-served.
    with pytest.raises(openai.BadRequestError, match="unknown policy 'missing-weights'"):
        client.chat.completions.create(model="stub", messages=MESSAGES,
                                       extra_headers={"X-Vilmo-Policy": "missing-weights"})
