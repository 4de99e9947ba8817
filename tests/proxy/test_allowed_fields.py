"""Only allow-listed fields of an upstream's reply reach the client (forward only what is
allow-listed; refuse by default), on both upstream paths, in plain replies and in buffer and
chunked streams.

The reply check reads every string of each choice's ``message`` or ``delta``; before the fix,
fields outside them were relayed unread: words the policy blocks ("stab" goes against mft.care
for the keyword fake judge) reached the client in a choice's unknown field, an unknown
top-level field, a string in ``usage``, or the ``top_logprobs`` alternatives (tokens that were
not the reply), while the checked reply itself passed.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from streams import ASK, by_choice, events, plain, sse
from stub_upstream import StubUpstream

from proxy.fields import keep_allowed

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


def place(stub: StubUpstream, where: str) -> None:
    for name, value in EXTRA_PLACES[where].items():
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
    """The official client reads the logprobs: the chosen tokens as they came (they mirror
    the checked text), ``top_logprobs`` empty (the alternatives were never checked)."""
    stub.choice_extra = {"logprobs": {"content": [entry("Hello", [" Hi", " Hey"])],
                                      "refusal": None}}
    client = openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                           default_headers={"X-Vilmo-Policy": "g-block-buffer"})
    reply = client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                           top_logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [(t.token, t.logprob, t.top_logprobs) for t in logprobs.content] == [
        ("Hello", -0.5, [])]
    stream = client.chat.completions.create(model="stub", messages=ASK, logprobs=True,
                                            top_logprobs=2, stream=True)
    tokens = [t for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content
              for t in c.logprobs.content]
    assert tokens and all(t.token == "Hello" and t.top_logprobs == [] for t in tokens)


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
                 {"index": 0, "delta": {"content": "Hi", "anything": {"x": "y"}},
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
    assert reply == {
        "id": "c", "model": "m", "choices": [
            {"index": 0, "message": {"content": "Hi", "new": "kept: checked"},
             "logprobs": {"content": [{**entry("Hi", []), "top_logprobs": []}]}}],
        "usage": {"total_tokens": 3, "details": {"cached": 1}},
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
            "jailbreak": {"filtered": False, "detected": False}, "error": {"code": "e"}}}]}


@pytest.mark.parametrize("logprobs", ["words", ["a"], {"content": "words"},
                                      {"content": ["words", None]}])
def test_malformed_logprobs_are_dropped(logprobs: object) -> None:
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": {}, "logprobs": logprobs}]}
    assert keep_allowed(chunk, "delta") is True
    assert "words" not in json.dumps(chunk)
