"""Text in a ``tool_call_id`` or a tool call's ``id`` counts against a key's ``tpm``, and such an
id is bounded (review rv1, r1).

``proxy.token_estimate.sent`` read a message's strings with ``proxy.chunks.texts_of``, which
skips every string under ``id``, ``tool_call_id``, ``type``, ``role`` and ``index`` at any depth
(right for a reply, whose ids are made ids where it enters), and the request's model took any
length there: 38,400 characters of words in ids were forwarded on a ``tpm: 1000`` key, which
refused the same words as content (429). Now a string there is counted unless it is an id
(``proxy.reply_schema.is_id``), and both ids are at most ``MAX_TOOL_CALL_ID_CHARS`` (256; a longer one is the client's 400)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeUpstream, KeywordClassifier, fake_services, post_chat

from proxy.request_bounds import MAX_TOOL_CALL_ID_CHARS
from proxy.token_estimate import estimated_tokens, least_estimate
from vilmo.instruct.principles import PrincipleBank

WORDS = "Please explain in great detail why honesty matters to everyone. "
"""64 characters of words: no id."""
REAL_ID = "call_Xk2pQ9vRt7LmN3bYw8ZcA1dE"


def _with_ids(call_id: str, result_id: str, calls: int = 1) -> dict[str, Any]:
    tool_calls = [{"id": call_id, "type": "function",
                   "function": {"name": "lookup", "arguments": "{}"}}] * calls
    return {"model": "stub", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        {"role": "tool", "tool_call_id": result_id, "content": "ok"}]}


def test_words_in_ids_are_estimated_as_words() -> None:
    text = WORDS * 3  # 192 characters, within the bound
    plain = estimated_tokens(_with_ids(REAL_ID, REAL_ID))
    as_ids = estimated_tokens(_with_ids(text, text))
    as_content = estimated_tokens({"model": "stub", "messages": [
        {"role": "user", "content": "hi"}, {"role": "user", "content": text},
        {"role": "user", "content": text}]})
    assert as_ids - plain >= as_content - estimated_tokens(
        {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}) > 50
    assert least_estimate(_with_ids(text, text))[0] > least_estimate(
        _with_ids(REAL_ID, REAL_ID))[0] + 50


def test_real_ids_and_labels_are_not_counted() -> None:
    """An id is an id: two requests that differ in their ids' values cost the same."""
    assert (estimated_tokens(_with_ids(REAL_ID, REAL_ID))
            == estimated_tokens(_with_ids("call_1", "call_1")))


def test_text_beside_a_media_part_is_estimated() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    bare = {"model": "stub", "messages": [{"role": "user", "content": [image]}]}
    padded = {"model": "stub", "messages": [{"role": "user", "content": [
        {**image, "note": WORDS * 50}]}]}
    assert estimated_tokens(padded) - estimated_tokens(bare) > 500


@pytest.mark.parametrize(("where", "param"), [
    ("tool_call_id", "messages.2.tool_call_id"), ("tool_calls.id", "messages.1.tool_calls.0")])
def test_an_over_long_id_is_the_clients_400(policy_dir: Path, bank: PrincipleBank,
                                            where: str, param: str) -> None:
    long = "x" * (MAX_TOOL_CALL_ID_CHARS + 1)
    body = (_with_ids(REAL_ID, long) if where == "tool_call_id"
            else _with_ids(long, REAL_ID))
    upstream = FakeUpstream()
    services = fake_services(policy_dir, bank, upstream, KeywordClassifier())
    response = asyncio.run(post_chat(services, body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"].startswith(param)
    assert upstream.calls == []
    at_bound = "y" * MAX_TOOL_CALL_ID_CHARS
    fine = asyncio.run(post_chat(services, _with_ids(at_bound, at_bound)))
    assert fine.status_code == 200, fine.text
