"""What the reply check never reads reaches the client only as what it must be: the numbers
of logprobs as numbers, and in the message or delta, ``usage`` and Azure's filter results only
the keys of their schema (``proxy.reply_schema``), each value of its kind.

Before the fix, a logprobs entry's ``logprob`` was relayed whatever it held (a sentence, in
plain replies and streams, every mode; the official client returned it), and in the message,
delta and ``usage`` every key shaped like a label (``I_will_stab_you_tonight_with_a_knife``,
128 characters of ``_.-`` and the like) was relayed with numbers, flags or lists of ints under
it, unread, as were ids, nested ``type`` labels, the strings of ``content_filter_results`` and
``audio.data`` of that shape: a sentence needs no spaces.
"""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from streams import ASK, asking_audio, by_choice, events, plain, sse
from stub_upstream import StubUpstream

from proxy.fields import keep_allowed

pytestmark = pytest.mark.both_paths
SERIALIZER_WARNING = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
"""LiteLLM serializes a reply whose ``logprob`` is no float with this warning, and relays it
(the tests make warnings errors, so that without this the router path would refuse it)."""

WORDS = "I will stab you tonight with a knife"
JOINED = WORDS.replace(" ", "_")
CAMEL = WORDS.title().replace(" ", "")


def lp(logprob: object, token: str = "Hi", **more: Any) -> dict[str, Any]:
    return {"content": [{"token": token, "logprob": logprob, "bytes": None, **more}]}


def stab_free(text: str) -> bool:
    return "stab" not in text.lower()


# Through the gateway, both upstream paths.

@SERIALIZER_WARNING
@pytest.mark.parametrize("mode", ["plain", "buffer", "chunked"])
def test_a_logprob_that_is_a_sentence_never_reaches_the_client(
        gateway: str, stub: StubUpstream, mode: str) -> None:
    stub.script = [{"content": "Hi"}]
    stub.choice_extra = {"logprobs": lp(WORDS)}
    if mode == "plain":
        response = plain(gateway, "g-block-buffer", logprobs=True)
        assert response.status_code == 200, response.text
        assert stab_free(response.text)
        choice = response.json()["choices"][0]
        assert choice["message"]["content"] == "Hi" and choice["logprobs"] is None
        return
    status, lines = sse(gateway, f"g-block-{mode}", logprobs=True)
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert stab_free("".join(lines))
    assert by_choice(lines)[0] == {0: "Hi"}


@SERIALIZER_WARNING
def test_the_openai_client_gets_numbers_as_logprobs(gateway: str, stub: StubUpstream) -> None:
    stub.script = [{"content": "Hi"}]
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-buffer"})
    stub.choice_extra = {"logprobs": lp(WORDS)}
    chunks = list(client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                                 stream=True))
    assert all(c.logprobs is None for chunk in chunks for c in chunk.choices)
    assert "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices) == "Hi"
    stub.choice_extra = {"logprobs": lp(-0.25)}
    reply = client.chat.completions.create(model="stub", messages=ASK, logprobs=True)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [(t.token, t.logprob) for t in logprobs.content] == [("Hi", -0.25)]


UNREAD = {"role": "assistant", "content": "Hi",
          "extra_field": {JOINED: 1}, "x": {JOINED: True, "type": JOINED},
          JOINED: [1, 2, 3],
          "tool_calls": [{"index": 0, "id": JOINED, "type": JOINED,
                          "function": {"name": "act", "arguments": "{}"}}],
          "audio": {"id": CAMEL, "data": JOINED, "transcript": ""}}
"""A message (or delta) carrying the sentence in keys, ids, a ``type`` and audio data."""


@pytest.mark.parametrize("mode", ["plain", "buffer", "chunked"])
def test_keys_ids_and_types_of_a_message_never_carry_a_sentence(
        gateway: str, stub: StubUpstream, mode: str) -> None:
    stub.raw_choices = [{"index": 0, "finish_reason": None, "message": UNREAD,
                         "content_filter_results": {
                             "violence": {"filtered": False, "severity": JOINED},
                             "error": {"code": JOINED}, JOINED: {"filtered": False}}}]
    if mode == "plain":
        response = plain(gateway, "g-block-buffer")
        assert stab_free(response.text), response.text
        if response.status_code == 502:
            return  # LiteLLM's Router may refuse such a reply itself (its error in the log)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "Hi"
        return
    status, lines = sse(gateway, f"g-block-{mode}")
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert stab_free("".join(lines))


@pytest.mark.parametrize("mode", ["plain", "buffer"])
def test_keys_of_usage_never_carry_a_sentence(gateway: str, stub: StubUpstream,
                                              mode: str) -> None:
    stub.top_extra = {"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                                JOINED: 2, "prompt_tokens_details": {JOINED: 3}},
                      "id": JOINED, "system_fingerprint": CAMEL}
    if mode == "plain":
        response = plain(gateway, "g-block-buffer")
        assert response.status_code == 200, response.text
        assert stab_free(response.text)
        assert response.json()["usage"]["total_tokens"] == 2
        return
    status, lines = sse(gateway, "g-block-buffer", stream_options={"include_usage": True})
    assert status == 200 and stab_free("".join(lines))
    assert [e["usage"]["total_tokens"] for e in events(lines) if e.get("usage")]


def test_a_real_tool_call_still_works(gateway: str, stub: StubUpstream) -> None:
    stub.script = [{"content": None, "tool_calls": [
        {"id": "call_Qx7Zk2LmN9pR4sT1vW3yB5dF", "type": "function",
         "function": {"name": "act", "arguments": '{"x": 1}'}}]}]
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-buffer"})
    reply = client.chat.completions.create(model="stub", messages=ASK)
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and re.fullmatch(r"call_[A-Za-z0-9]{24}", calls[0].id)
    assert calls[0].id != "call_Qx7Zk2LmN9pR4sT1vW3yB5dF"  # the gateway's (test_tool_call_ids)
    assert calls[0].type == "function" and calls[0].function.arguments == '{"x": 1}'


# The allow-list itself, without a gateway.

@pytest.mark.parametrize("logprob", [WORDS, True, None, [1, 2], {"x": 1}, 10**400, 1e300,
                                     float("nan"), float("-inf")])
def test_a_logprob_must_be_a_finite_number(logprob: object) -> None:
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "Hi"},
                                          "logprobs": lp(logprob)}]}
    assert keep_allowed(reply, "message") is True
    assert reply["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("more", [
    {"bytes": [72, "i"]}, {"bytes": [72, True]}, {"bytes": [72, 256]}, {"bytes": [-1]},
    {"bytes": list(range(200)) * 6}, {"bytes": WORDS},
    {"top_logprobs": [{"token": "Ho", "logprob": WORDS}]},
    {"top_logprobs": [{"token": "Ho", "logprob": -1.0, "bytes": [WORDS]}]},
    {"top_logprobs": [{"token": 7, "logprob": -1.0}]},
    {"top_logprobs": [{"token": "Ho", "logprob": -1.0}] * 65},
    {"top_logprobs": WORDS}])
def test_bytes_and_alternatives_must_be_well_typed(more: dict[str, Any]) -> None:
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "Hi"},
                                          "logprobs": lp(-1.0, **more)}]}
    assert keep_allowed(reply, "message") is True
    assert reply["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("logprob", [-0.5, 0, -9999.0, -3])
def test_well_typed_logprobs_are_kept(logprob: float) -> None:
    tokens = lp(logprob, bytes=[72, 105], top_logprobs=[])
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "Hi"},
                                          "logprobs": tokens}]}
    assert keep_allowed(reply, "message") is False
    assert reply["choices"][0]["logprobs"] is tokens


@pytest.mark.parametrize("value", [JOINED, CAMEL, "stab_the_guard", "call_stab_the_guard",
                                   "I-will-stab-you", "x" * 65, "call stab", "a.b.c.d",
                                   "", 7, None])
def test_sentences_are_no_ids(value: object) -> None:
    from proxy.reply_schema import is_id
    assert not is_id(value)


@pytest.mark.parametrize("value", [
    "call_Qx7Zk2LmN9pR4sT1vW3yB5dF", "toolu_01A09q90qw90lq917835lq9",
    "chatcmpl-tool-9f1c2d3e4b5a69788796a5b4c3d2e1f0", "call_0_8d4b3c4e-9f1a-4b1a-9c1a-1234567890ab",
    "D681PevKs", "call_ab12cd34", "audio_6b3f2a1c9d8e7f6a5b4c3d2e1f0a9b8c", "fp_44709d6fcb",
    "chatcmpl-9xYzAbC123", "chatcmpl-vilmo", "fc_12345678-1234-1234-1234-123456789012"])
def test_providers_ids_are_ids(value: str) -> None:
    from proxy.reply_schema import is_id
    assert is_id(value)


def test_a_message_keeps_only_its_schema_s_keys() -> None:
    from proxy.reply_schema import fresh_id, gateway_id
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": json.loads(json.dumps(UNREAD))}]}
    with asking_audio():  # the audio of a request that asked for it (else removed)
        assert keep_allowed(reply, "message") is True
    message = reply["choices"][0]["message"]
    assert stab_free(json.dumps(message))
    assert message == {"role": "assistant", "content": "Hi", "tool_calls": [
        {"index": 0, "id": fresh_id("call_")(JOINED),
         "function": {"name": "act", "arguments": "{}"}}],
        "audio": {"id": gateway_id(CAMEL, "audio_"), "transcript": ""}}


@pytest.mark.parametrize("value", [True, -1, 2**60, [1, 2], "3", {"n": 1}])
def test_usage_holds_counts_only(value: object) -> None:
    reply: dict[str, Any] = {"usage": {"total_tokens": value, "prompt_tokens": 1}, "choices": []}
    assert keep_allowed(reply, "message") is True
    assert reply["usage"] == {"prompt_tokens": 1}


def test_filter_results_keep_azure_s_labels_only() -> None:
    labels = {"hate": {"filtered": False, "severity": "safe"},
              "violence": {"filtered": True, "severity": JOINED},
              "jailbreak": {"filtered": False, "detected": "yes"},
              "protected_material_code": {"filtered": False, "detected": True,
                                          "citation": {"URL": f"https://x/{JOINED}"}},
              "custom_blocklists": {"filtered": False, "details": [
                  {"filtered": False, "id": "blocklist-1"}, {"filtered": True, "id": JOINED}]},
              "error": {"code": JOINED, "message": WORDS}, JOINED: {"filtered": False}}
    reply: dict[str, Any] = {"choices": [{"index": 0, "delta": {},
                                          "content_filter_results": labels,
                                          "stop_reason": JOINED}]}
    assert keep_allowed(reply, "delta") is True
    choice = reply["choices"][0]
    assert stab_free(json.dumps(choice)) and "stop_reason" not in choice
    assert choice["content_filter_results"] == {
        "hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": True},
        "jailbreak": {"filtered": False},
        "protected_material_code": {"filtered": False, "detected": True},
        "custom_blocklists": {"filtered": False, "details": [
            {"filtered": False, "id": "blocklist-1"}, {"filtered": True}]}, "error": {}}


REAL_REPLIES: dict[str, dict[str, Any]] = {
    "openai": {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion",
        "created": 1741570283, "model": "gpt-4o-2024-08-06", "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": None, "refusal": None, "annotations": [
                {"type": "url_citation", "url_citation": {
                    "start_index": 0, "end_index": 5, "title": "A page",
                    "url": "https://example.com/a"}}],
            "audio": {"id": "audio_6b3f2a1c9d8e7f6a5b4c3d2e1f0a9b8c", "data": "UklGRiQAAA==",
                      "expires_at": 1741573883, "transcript": "Hi"},
            "tool_calls": [{"id": "call_Qx7Zk2LmN9pR4sT1vW3yB5dF", "type": "function",
                            "function": {"name": "act", "arguments": "{}"}},
                           {"id": "call_ab12cd34", "type": "custom",
                            "custom": {"name": "grep", "input": "x"}}]}}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {
                      "reasoning_tokens": 0, "audio_tokens": 0,
                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}},
    "deepseek": {
        "id": "930c60df-bf64-41c9-a88e-3ec75f81e00e", "object": "chat.completion",
        "created": 1, "model": "deepseek-reasoner", "system_fingerprint": "fp_7e73fd9a08",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
            "role": "assistant", "content": "Hi", "reasoning_content": "Greet."}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 1},
                  "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 1}},
    "azure": {
        "id": "chatcmpl-9xYzAbC123", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-2024-05-13", "system_fingerprint": "fp_5f4bad809a",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
            "hate": {"filtered": False, "severity": "safe"},
            "jailbreak": {"filtered": False, "detected": False},
            "custom_blocklists": {"filtered": False, "details": []}}}],
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "Hi"},
                     "content_filter_results": {
                         "hate": {"filtered": False, "severity": "safe"},
                         "self_harm": {"filtered": False, "severity": "safe"},
                         "protected_material_text": {"filtered": False, "detected": False},
                         "custom_blocklists": [{"filtered": False, "id": "blocklist-1"}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
    "vllm": {
        "id": "chatcmpl-9f1c2d3e4b5a69788796a5b4c3d2e1f0", "object": "chat.completion",
        "created": 1, "model": "meta-llama/Llama-3.1-8B-Instruct",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "stop_reason": 128008,
                     "logprobs": None, "message": {
                         "role": "assistant", "content": None, "reasoning_content": None,
                         "tool_calls": [{"id": "chatcmpl-tool-9f1c2d3e4b5a69788796a5b4c3d2e1f0",
                                         "type": "function",
                                         "function": {"name": "act", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                  "prompt_tokens_details": None}},
    "groq": {
        "id": "chatcmpl-f51b2cd2-bef7-417e-964e-a08f0b513c22", "object": "chat.completion",
        "created": 1, "model": "llama-3.3-70b-versatile", "system_fingerprint": "fp_a4265e44d5",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "Hi"}}],
        "usage": {"queue_time": 0.017, "prompt_tokens": 1, "prompt_time": 0.001,
                  "completion_tokens": 1, "completion_time": 0.004, "total_tokens": 2,
                  "total_time": 0.005}},
}
"""Replies as providers send them (fields from their documentation)."""


@pytest.mark.parametrize("provider", REAL_REPLIES)
def test_what_real_providers_send_is_relayed_as_it_is(provider: str) -> None:
    """As it is, but each tool call's id: the gateway's, of the same shape (test_tool_call_ids)."""
    from proxy.reply_schema import fresh_id
    reply = json.loads(json.dumps(REAL_REPLIES[provider]))
    expected = json.loads(json.dumps(REAL_REPLIES[provider]))
    calls = expected["choices"][0]["message"].get("tool_calls") or []
    for call in calls:
        call["id"] = fresh_id("call_")(call["id"])
    with asking_audio():  # OpenAI's has audio: a reply to a request that asked for it
        assert keep_allowed(reply, "message") is bool(calls) and reply == expected


def test_a_streamed_tool_call_keeps_its_shape() -> None:
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_Qx7Zk2LmN9pR4sT1vW3yB5dF", "type": "function",
         "function": {"name": "act", "arguments": ""}}]}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{}"}}]}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"audio": {"data": "AA", "transcript": "Hi"}},
                      "finish_reason": None}]}]
    from proxy.reply_schema import fresh_id
    for chunk in chunks:
        before = json.loads(json.dumps(chunk))
        for call in before["choices"][0]["delta"].get("tool_calls") or []:
            if "id" in call:  # the gateway's id, of the same shape (test_tool_call_ids)
                call["id"] = fresh_id("call_")(call["id"])
        with asking_audio():
            assert keep_allowed(chunk, "delta") is ("id" in json.dumps(before)) and chunk == before
