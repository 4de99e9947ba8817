"""Only allow-listed fields of an upstream's reply reach the client (forward only what is
allow-listed; refuse by default), on both upstream paths, in plain replies and in buffer and
chunked streams.

The reply check reads every string of each choice's ``message`` or ``delta``; before the fix,
fields outside them were relayed unread: words the policy blocks ("stab" goes against mft.care
for the keyword fake judge) reached the client in a choice's unknown field, an unknown
top-level field, a string in ``usage``, or the ``top_logprobs`` alternatives (tokens that were
not the reply), while the checked reply itself passed. Then the fields the allow-list kept
carried it too: the reply's ``id``, ``model``, ``system_fingerprint``, ``service_tier``,
``object`` or ``created``, a ``finish_reason``, the logprobs' tokens (never compared with the
checked text), the keys of ``usage`` and of the label fields, a list of label words, and the
strings the check skips in a message (``role``, a tool call's ``id``, a ``type``): each is
now a bounded label or text the check reads.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from streams import ASK, asking_audio, by_choice, events, plain, sse
from stub_upstream import StubUpstream

from proxy.fields import StreamLabels, keep_allowed
from proxy.relay import wire_bytes
from proxy.reply_schema import fresh_id

pytestmark = pytest.mark.both_paths

VIOLENT = "then stab the guard at the gate and walk away"
CALM_REPLY = StubUpstream.reply


def entry(token: str, alternatives: list[str]) -> dict[str, Any]:
    """A logprobs entry: the token, and ``alternatives`` as its ``top_logprobs``."""
    return {"token": token, "logprob": -0.5, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": -3.0, "bytes": list(t.encode())}
                             for t in alternatives]}


EXTRA_PLACES: dict[str, dict[str, dict[str, Any]]] = {
    "a choice's unknown field": {"choice_extra": {"text": f"Sure, {VIOLENT}."}},
    "a choice's unknown object": {"choice_extra": {"debug": {"draft": f"Sure, {VIOLENT}."}}},
    "an unknown top-level field": {"top_extra": {"extra": f"Sure, {VIOLENT}."}},
    "an unknown top-level object": {"top_extra": {"trace": [{"draft": f"Sure, {VIOLENT}."}]}},
    "a string in usage": {"top_extra": {"usage": {
        "prompt_tokens": 11, "completion_tokens": 13, "total_tokens": 24,
        "note": f"Sure, {VIOLENT}.", "completion_tokens_details": {"why": VIOLENT}}}},
    "top_logprobs alternatives": {"choice_extra": {"logprobs": {"content": [
        entry("Hello", ["stab", " the", " guard"])]}}},
    "logprobs.refusal alternatives": {"choice_extra": {"logprobs": {"content": None, "refusal": [
        entry("Hello", ["stab", " the", " guard"])]}}},
    "an unknown logprobs field": {"choice_extra": {"logprobs": {
        "content": [entry("Hello", [])], "text_offset": f"Sure, {VIOLENT}."}}},
    "an unknown logprobs entry field": {"choice_extra": {"logprobs": {
        "content": [{**entry("Hello", []), "text": f"Sure, {VIOLENT}."}]}}},
    "free text in a label field": {"choice_extra": {"content_filter_results": {
        "violence": {"filtered": False, "severity": "safe"},
        "error": {"code": "x", "message": f"Sure, {VIOLENT}."}}, "stop_reason": VIOLENT}},
}
"""Where an upstream may put text outside the checked message, as the stub's extra fields
(``top_extra``, ``choice_extra``: on the reply, and on every chunk of a stream)."""


SENTENCE = f"Sure, {VIOLENT}."
CALM_SCRIPT: dict[str, Any] = {"content": CALM_REPLY}

LABEL_PLACES: dict[str, dict[str, Any]] = {
    "the id": {"top_extra": {"id": SENTENCE}},
    "the model": {"top_extra": {"model": SENTENCE}},
    "the system_fingerprint": {"top_extra": {"system_fingerprint": SENTENCE}},
    "the service_tier": {"top_extra": {"service_tier": SENTENCE}},
    "the object": {"top_extra": {"object": SENTENCE}},
    "created": {"top_extra": {"created": SENTENCE}},
    "a finish_reason": {"choice_extra": {"finish_reason": SENTENCE}},
    "logprobs tokens that are not the reply": {"choice_extra": {"logprobs": {"content": [
        entry(SENTENCE, [])]}}},
    "logprobs bytes that are not the token": {"choice_extra": {"logprobs": {"content": [
        {**entry("Hello", []), "bytes": list(SENTENCE.encode())}]}}},
    "a key of usage": {"top_extra": {"usage": {"total_tokens": 24, SENTENCE: 1}}},
    "a key of a label field": {"choice_extra": {"content_filter_results": {
        SENTENCE: {"filtered": False}}}},
    "a list of label words": {"choice_extra": {"content_filter_results": {
        "words": SENTENCE.split()}}},
    "the message's role": {"script": [{**CALM_SCRIPT, "role": SENTENCE}]},
    "a type in the message": {"script": [{**CALM_SCRIPT, "x": {"type": SENTENCE}}]},
    "a key in the message": {"script": [{**CALM_SCRIPT, "x": {SENTENCE: 1}}]},
    "a tool call's id": {"script": [{"content": CALM_REPLY, "tool_calls": [
        {"id": SENTENCE, "type": "function", "function": {"name": "act", "arguments": "{}"}}]}]},
}
"""Where an upstream may put text in the fields the allow-list keeps, as the stub's settings
(``top_extra``, ``choice_extra``: on the reply and every chunk; ``script``: the message)."""


def place(stub: StubUpstream, where: str) -> None:
    for name, value in {**EXTRA_PLACES, **LABEL_PLACES}[where].items():
        setattr(stub, name, value)


@pytest.mark.parametrize("where", EXTRA_PLACES)
def test_text_outside_the_message_never_reaches_the_client_in_plain_replies(
        gateway: str, stub: StubUpstream, where: str) -> None:
    place(stub, where)
    response = plain(gateway, "g-block-buffer")
    assert response.status_code == 200, response.text
    assert "stab" not in response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == CALM_REPLY and choice["finish_reason"] == "stop"


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
@pytest.mark.parametrize("where", EXTRA_PLACES)
def test_text_outside_the_delta_never_reaches_the_client_in_streams(
        gateway: str, stub: StubUpstream, where: str, mode: str) -> None:
    place(stub, where)
    status, lines = sse(gateway, f"g-block-{mode}", stream_options={"include_usage": True})
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "stab" not in "".join(lines)
    texts, finishes = by_choice(lines)
    assert texts == {0: CALM_REPLY} and finishes == {0: "stop"}


@pytest.mark.parametrize("where", LABEL_PLACES)
def test_text_in_a_label_never_reaches_the_client_in_plain_replies(
        gateway: str, stub: StubUpstream, where: str) -> None:
    """On the router path LiteLLM refuses a reply whose ``created`` is no number, and its
    error quotes the value: before the fix that reached the client inside the 502."""
    place(stub, where)
    response = plain(gateway, "g-block-chunked")
    assert "stab" not in response.text
    if where in ("the message's role", "created") and response.status_code == 502:
        return  # LiteLLM's Router refuses the reply itself (its error is in the log only)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == CALM_REPLY
    assert choice["finish_reason"] in ("stop", "tool_calls")


@pytest.mark.parametrize("mode", ["buffer", "chunked"])
@pytest.mark.parametrize("where", LABEL_PLACES)
def test_text_in_a_label_never_reaches_the_client_in_streams(
        gateway: str, stub: StubUpstream, where: str, mode: str) -> None:
    place(stub, where)
    status, lines = sse(gateway, f"g-block-{mode}", stream_options={"include_usage": True})
    assert status == 200 and lines[-1] == "data: [DONE]"
    assert "stab" not in "".join(lines)
    texts, _ = by_choice(lines)
    if where != "a finish_reason":  # on every chunk (the stub's): the first ends the choice
        assert texts[0].startswith(CALM_REPLY)


def test_the_openai_client_reads_a_reply_whose_labels_were_replaced(
        gateway: str, stub: StubUpstream) -> None:
    stub.top_extra = {"id": SENTENCE, "model": SENTENCE, "system_fingerprint": SENTENCE}
    stub.choice_extra = {"finish_reason": SENTENCE}
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-chunked"})
    reply = client.chat.completions.create(model="stub", messages=ASK)
    assert reply.id == "chatcmpl-vilmo" and reply.model == "stub"
    assert reply.system_fingerprint is None and isinstance(reply.created, int)
    assert reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == CALM_REPLY
    stub.choice_extra = {}  # in every chunk it would end the choice at the first
    chunks = list(client.chat.completions.create(model="stub", messages=ASK, stream=True))
    assert {c.id for c in chunks} == {"chatcmpl-vilmo"}
    assert len({c.model for c in chunks}) == 1 and "stab" not in chunks[0].model
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CALM_REPLY


def test_unknown_fields_are_dropped_and_known_ones_kept(gateway: str, stub: StubUpstream,
                                                      upstream_path: str) -> None:
    labels = {"hate": {"filtered": False, "severity": "safe"}}
    stub.top_extra = {"extra": "x", "service_tier": "default"}
    stub.choice_extra = {"text": "x", "stop_reason": 7, "content_filter_results": labels}
    reply = plain(gateway, "g-block-buffer").json()
    assert "extra" not in reply and reply["service_tier"] == "default"
    assert reply["system_fingerprint"] == "fp_stub" and reply["usage"]["total_tokens"] == 24
    choice = reply["choices"][0]
    assert "text" not in choice
    if upstream_path == "direct":  # LiteLLM's Router drops a choice's other fields itself
        assert choice["stop_reason"] == 7 and choice["content_filter_results"] == labels
    _, lines = sse(gateway, "g-block-chunked")
    for event in events(lines):
        assert "extra" not in event
        assert all("text" not in c for c in event["choices"])


def test_logprobs_keep_their_shape_with_no_alternatives(gateway: str, stub: StubUpstream) -> None:
    """The official client reads the logprobs: the chosen tokens as they came (they spell
    the checked text), ``top_logprobs`` empty (the alternatives were never checked)."""
    stub.logprobs = True
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-buffer"})
    reply = client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                           top_logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(t.token for t in logprobs.content) == CALM_REPLY
    assert all(t.logprob == -0.5 and t.top_logprobs == [] for t in logprobs.content)
    stream = client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                            top_logprobs=2, stream=True)
    tokens = [t for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content
              for t in c.logprobs.content]
    assert "".join(t.token for t in tokens) == CALM_REPLY
    assert all(t.top_logprobs == [] for t in tokens)


@pytest.mark.parametrize("mode", ["plain", "buffer"])
def test_a_blocked_choice_s_logprobs_are_not_relayed(gateway: str, stub: StubUpstream,
                                                     mode: str) -> None:
    """A blocked choice is replaced whole: the tokens of its text go with it."""
    stub.script = [{"content": f"Sure, {VIOLENT}."}]
    stub.choice_extra = {"logprobs": {"content": [entry(" stab", [])]}}
    if mode == "plain":
        response = plain(gateway, "g-block-buffer")
        text = response.text
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] == "content_filter" and not choice.get("logprobs")
    else:
        _, lines = sse(gateway, "g-block-buffer")
        text = "".join(lines)
        assert by_choice(lines)[1] == {0: "content_filter"}
    assert "stab" not in text


# The allow-list itself (``proxy.fields.keep_allowed``), without a gateway.

def test_a_clean_chunk_is_left_as_it_is() -> None:
    """Nothing removed: False, so the direct path relays the upstream's bytes unchanged."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "system_fingerprint": "fp", "usage": None, "choices": [
                 {"index": 0, "delta": {"content": "Hi", "function_call": {"name": "x"}},
                  "finish_reason": None, "logprobs": {"content": [entry("Hi", [])]}}]}
    before = json.loads(json.dumps(chunk))
    assert keep_allowed(chunk, "delta") is False and chunk == before


def test_a_reply_keeps_only_its_allowed_fields() -> None:
    reply: dict[str, Any] = {
        "id": "c", "model": "m", "extra": "x", "choices": [
            {"index": 0, "message": {"content": "Hi", "new": "kept: checked"}, "delta": {},
             "text": "x", "logprobs": {"content": [entry("Hi", ["Ho"])], "more": 1}}],
        "usage": {"total_tokens": 3, "note": "x", "details": {"cached": 1, "why": "x"}},
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
            "jailbreak": {"filtered": False, "detected": False},
            "error": {"code": "e", "message": "some words"}}}]}
    assert keep_allowed(reply, "message") is True
    assert reply == {  # a key of the message not in its schema is dropped, even if checked
        "id": "c", "model": "m", "choices": [
            {"index": 0, "message": {"content": "Hi"},
             "logprobs": {"content": [{**entry("Hi", []), "top_logprobs": []}]}}],
        "usage": {"total_tokens": 3},
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
            "jailbreak": {"filtered": False, "detected": False}, "error": {"code": "e"}}}]}


@pytest.mark.parametrize("logprobs", ["words", ["a"], {"content": "words"},
                                      {"content": ["words", None]}])
def test_malformed_logprobs_are_dropped(logprobs: object) -> None:
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {}, "logprobs": logprobs}]}
    assert keep_allowed(chunk, "delta") is True
    assert "words" not in json.dumps(chunk)


def test_a_stream_keeps_its_first_chunk_s_labels() -> None:
    """Labels changing chunk by chunk would spell a sentence one word at a time."""
    labels = StreamLabels()
    words = ["then", "stab", "the", "guard"]
    tiers = ["default", "flex", "scale", "priority"]
    chunks = [{"id": f"c-{w}", "object": "chat.completion.chunk", "created": 1 + i,
               "model": w, "system_fingerprint": w, "service_tier": tiers[i],
               "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
              for i, w in enumerate(words)]
    changed = [keep_allowed(chunk, "delta", "m", labels) for chunk in chunks]
    assert changed == [True, True, True, True]  # "c-then": two words, no id (its fallback)
    assert all(c["id"] == "chatcmpl-vilmo" and c["system_fingerprint"] == "then"
               and c["model"] == "m"  # no name of the requested model: the requested one
               and c["service_tier"] == "default" and c["created"] == 1 for c in chunks)


def test_empty_labels_of_held_chunks_do_not_become_the_stream_s() -> None:
    """Azure's ``prompt_filter_results`` chunk comes first with ``""`` and ``0``."""
    labels = StreamLabels()
    held = {"id": "", "object": "", "created": 0, "model": "", "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}
    first = {"id": "c", "object": "chat.completion.chunk", "created": 5, "model": "gpt-4o",
             "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    assert keep_allowed(held, "delta", "gpt-4o", labels) is False
    assert keep_allowed(first, "delta", "gpt-4o", labels) is False
    assert labels.held == {"id": "c", "model": "gpt-4o", "created": 5}


def test_a_direct_stream_s_labels_are_its_first_chunk_s() -> None:
    from test_direct import read_sse
    events = [json.dumps({"id": w, "model": "m" if w == "a" else w, "created": 1, "choices": [
        {"index": 0, "delta": {"content": "x"}, "finish_reason": "stop" if w == "b" else None}]})
        for w in ("a", "stab", "b")]
    chunks = read_sse(*(f"data: {e}\n\n".encode() for e in events))
    assert [(c["id"], c["model"]) for c in chunks] == [("a", "m")] * 3
    assert wire_bytes(chunks[0]) is not None and wire_bytes(chunks[1]) is None


@pytest.mark.parametrize(("finish", "relayed"), [
    ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"), ("function_call", "function_call"), (None, None),
    ("eos_token", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("abort", "stop"), (SENTENCE, "stop"), (7, "stop"), ({"why": SENTENCE}, "stop"),
    ([SENTENCE], "stop")])
def test_finish_reasons_are_openai_s(finish: object, relayed: str | None) -> None:
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {}, "finish_reason": finish}]}
    keep_allowed(reply, "message")
    assert reply["choices"][0]["finish_reason"] == relayed


def test_labels_in_a_message_are_labels() -> None:
    message = {"role": SENTENCE, "content": "Hi", "tool_call_id": SENTENCE, "tool_calls": [
        {"index": 0, "id": SENTENCE, "type": "function", "function": {
            "name": "act", "arguments": "{}"}},
        {"index": 1, "id": "call_2", "type": ["function", SENTENCE]}],
        "audio": {"id": "audio_1", "data": SENTENCE, "transcript": "Hi"},
        "x": {SENTENCE: "kept words, checked", "ok": "read"}}
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": message}]}
    with asking_audio():  # the audio of a request that asked for it (else removed)
        assert keep_allowed(reply, "message") is True
    made = fresh_id("call_")  # every tool call's id is the gateway's (test_tool_call_ids)
    assert message == {"role": "assistant", "content": "Hi", "tool_calls": [
        {"index": 0, "id": made(SENTENCE), "type": "function",
         "function": {"name": "act", "arguments": "{}"}},
        {"index": 1, "id": made("call_2")}],
        "audio": {"id": "audio_1", "transcript": "Hi"}}


@pytest.mark.parametrize("role", [{"name": SENTENCE}, [SENTENCE], 7])
def test_a_role_that_is_no_string_is_the_assistant_s(role: object) -> None:
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"role": role, "content": "Hi"}}]}
    assert keep_allowed(reply, "message") is True
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Hi"}


def test_labels_at_the_top_are_labels_or_replaced() -> None:
    reply: dict[str, Any] = {"id": SENTENCE, "model": SENTENCE, "object": SENTENCE,
                             "created": SENTENCE, "system_fingerprint": SENTENCE,
                             "service_tier": 3, "choices": []}
    assert keep_allowed(reply, "message", "gpt-4o") is True
    assert reply["id"] == "chatcmpl-vilmo" and reply["model"] == "gpt-4o"
    assert reply["object"] == "chat.completion" and isinstance(reply["created"], int)
    assert "system_fingerprint" not in reply and "service_tier" not in reply


def test_keys_and_lists_of_labels_are_bounded() -> None:
    reply: dict[str, Any] = {
        "usage": {"total_tokens": 3, SENTENCE: 1, "details": {"then stab": 2, "cached": 1}},
        "choices": [{"index": 0, "delta": {}, "content_filter_results": {
            SENTENCE: {"filtered": True}, "words": ["then", "stab"], "n": list(range(40)),
            "custom_blocklists": {"details": [{"filtered": False, "id": "b1"}]},
            **{f"k{i}": "safe" for i in range(200)}}}]}
    assert keep_allowed(reply, "delta") is True
    assert reply["usage"] == {"total_tokens": 3}
    labels = reply["choices"][0]["content_filter_results"]  # Azure's keys only
    assert labels == {"custom_blocklists": {"details": [{"filtered": False, "id": "b1"}]}}


@pytest.mark.parametrize(("tokens", "kept"), [
    ([entry("Hi", []), entry(" there", [])], True),
    ([entry("Hi", [])], False),  # a token of the text missing
    ([entry("Hi", []), entry(" stab", [])], False),
    ([{**entry("Hi", []), "bytes": None}, {**entry(" there", []), "bytes": None}], True),
    ([{**entry("Hi", []), "bytes": list(b"stab")}, entry(" there", [])], False),
    ([{**entry("Hi", []), "bytes": "Hi"}, entry(" there", [])], False),
])
def test_logprobs_are_relayed_only_when_their_tokens_spell_the_text(
        tokens: list[dict[str, Any]], kept: bool) -> None:
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {"content": "Hi there"},
                                          "logprobs": {"content": tokens, "refusal": None}}]}
    keep_allowed(chunk, "delta")
    assert (chunk["choices"][0]["logprobs"] is not None) is kept


def test_tokens_that_are_parts_of_a_character_spell_it_by_their_bytes() -> None:
    """OpenAI writes a token that is part of a character as its bytes (``bytes:\\xf0\\x9f``)."""
    emoji = "🙂".encode()
    tokens = [{"token": "Hi ", "logprob": -1.0, "bytes": list(b"Hi "), "top_logprobs": []},
              {"token": "bytes:\\xf0\\x9f", "logprob": -1.0, "bytes": list(emoji[:2]),
               "top_logprobs": []},
              {"token": "\\x99\\x82", "logprob": -1.0, "bytes": list(emoji[2:]),
               "top_logprobs": []}]
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "Hi 🙂"},
                                          "logprobs": {"content": tokens}}]}
    assert keep_allowed(reply, "message") is False
    tokens[2]["bytes"] = list(b"\x99\x83")
    assert keep_allowed(reply, "message") is True and reply["choices"][0]["logprobs"] is None


def test_refusal_logprobs_must_spell_the_refusal() -> None:
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"refusal": "No."},
                                          "logprobs": {"content": None, "refusal": [
                                              entry("No", []), entry(" stab", [])]}}]}
    assert keep_allowed(reply, "message") is True and reply["choices"][0]["logprobs"] is None
