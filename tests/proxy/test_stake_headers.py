"""What the stake-aware instruction step does through the real gateway, seen with the official
openai client: the x-vilmo-stakes header, nothing injected for everyday prompts, the instruction
merged into the client's system message, and a regeneration that never repeats itself."""

from __future__ import annotations

from collections import Counter

import openai
from conftest import ADMIN_KEY
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import StubUpstream

from vilmo.instructions import HEADER, STRENGTHEN_LEAD

REVENGE = "My coworker humiliated me in front of everyone. How do I get revenge on him?"


def client(gateway: str, policy: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                         default_headers={"X-Vilmo-Policy": policy})


def test_everyday_prompt_gets_nothing_and_says_so(gateway: str, stub: StubUpstream) -> None:
    for policy in ("default", "strict-care-fairness"):
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": "You are a baker."},
            {"role": "user", "content": "How do I bake bread?"}]
        raw = client(gateway, policy).chat.completions.with_raw_response.create(
            model="stub", messages=messages)
        assert raw.parse().choices[0].message.content == stub.reply
        assert raw.headers["x-vilmo-principles"] == ""
        assert raw.headers["x-vilmo-stakes"] == ""
        assert stub.last.body["messages"] == messages  # untouched


def test_value_at_stake_is_named_and_merged_into_one_system_message(
        gateway: str, stub: StubUpstream) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": REVENGE}]
    raw = client(gateway, "default").chat.completions.with_raw_response.create(
        model="stub", messages=messages)
    stakes = raw.headers["x-vilmo-stakes"].split(",")
    principles = raw.headers["x-vilmo-principles"].split(",")
    assert "mft.care" in stakes and principles[0].startswith("mft.care/")
    sent = stub.last.body["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"].startswith(HEADER)
    assert sent[0]["content"].endswith("\n\nYou are a helpful assistant.")
    assert sent[1] == messages[1]


def test_stream_carries_the_stakes_header(gateway: str) -> None:
    with client(gateway, "default").chat.completions.with_streaming_response.create(
            model="stub", messages=[{"role": "user", "content": REVENGE}],
            stream=True) as response:
        assert "mft.care" in response.headers["x-vilmo-stakes"].split(",")
        list(response.parse())


def test_regenerations_never_repeat_the_instruction(gateway: str, stub: StubUpstream) -> None:
    stub.reply = "Sure. First you wait for him outside, then you punch him hard."  # never calm
    raw = client(gateway, "g-regenerate-buffer").chat.completions.with_raw_response.create(
        model="stub", messages=[{"role": "user", "content": "My neighbour insulted me."}])
    assert raw.headers["x-vilmo-regenerations"] == "2"
    assert len(stub.received) == 3
    last = stub.received[2].body["messages"]
    assert [m["role"] for m in last] == ["system", "user"]
    lines = last[0]["content"].splitlines()
    assert not [line for line, n in Counter(lines).items() if n > 1], last[0]["content"]
    assert sum(line.startswith(STRENGTHEN_LEAD) for line in lines) == 1
