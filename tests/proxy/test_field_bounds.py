"""Fields nobody declared are bounded in number, on the way in and on the way out.

Before the fix a client's message, content part, ``stream_options`` or request body could
carry any number of undeclared fields (each parsed, validated, and in a message forwarded),
and an upstream's message or delta any number of keys the check never reads (a word each),
with its label fields (``content_filter_results``...) up to 128 one-word strings (since
``proxy.reply_schema``, keys outside a reply's schema are dropped altogether).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY
from streams import ASK

from proxy.extras import MAX_EXTRA_BODY_FIELDS, MAX_EXTRA_FIELDS
from proxy.fields import keep_allowed

pytestmark = pytest.mark.both_paths


def post(gateway: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"})


def extra(count: int) -> dict[str, int]:
    return {f"k{i}": i for i in range(count)}


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{**ASK[0], **extra(MAX_EXTRA_FIELDS + 1)}]}, "messages.0.k8"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Hi", **extra(MAX_EXTRA_FIELDS + 50)}]}]},
     "messages.0.content.0.k8"),
    ({"messages": ASK, "stream": True, "stream_options": extra(MAX_EXTRA_FIELDS + 1)},
     "stream_options.k8"),
    ({"messages": ASK, **extra(MAX_EXTRA_BODY_FIELDS + 1)}, "k16"),
    ({"messages": ASK, **extra(5000)}, "k16"),
])
def test_too_many_undeclared_fields_are_a_400_naming_the_first_past_the_bound(
        gateway: str, body: dict[str, Any], param: str) -> None:
    response = post(gateway, {"model": "stub", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        param, "invalid_request", "invalid_request_error")


def test_undeclared_fields_within_the_bound_still_pass(gateway: str) -> None:
    message = {**ASK[0], **extra(MAX_EXTRA_FIELDS)}
    response = post(gateway, {"model": "stub", "messages": [message],
                              **extra(MAX_EXTRA_BODY_FIELDS)})
    assert response.status_code == 200


def test_an_upstream_message_relays_few_keys_the_check_never_reads() -> None:
    words = ["then", "stab", "a", "guard", "at", "his", "gate", "and", "walk", "away"]
    delta: dict[str, Any] = {"content": "Hi", "annotations": [], "x": {
        w: 1 for w in words}}
    chunk: dict[str, Any] = {"choices": [{"index": 0, "delta": delta}]}
    assert keep_allowed(chunk, "delta") is True
    relayed = chunk["choices"][0]["delta"]
    assert "x" not in relayed  # a key outside the delta's schema goes, with all it holds
    assert relayed["content"] == "Hi" and relayed["annotations"] == []


def test_url_citations_are_known_keys() -> None:
    citation = {"type": "url_citation", "url_citation": {
        "start_index": 0, "end_index": 2, "title": "Hi", "url": "https://example.org/"}}
    message: dict[str, Any] = {"content": "Hi", "annotations": [citation] * 3}
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": message}]}
    keep_allowed(reply, "message")
    assert reply["choices"][0]["message"] == {"content": "Hi", "annotations": [citation] * 3}


def test_a_label_field_relays_few_words() -> None:
    results = {f"w{i}": "safe" for i in range(100)}
    reply: dict[str, Any] = {"choices": [{"index": 0, "message": {"content": "Hi"},
                                          "content_filter_results": results}]}
    assert keep_allowed(reply, "message") is True
    kept = reply["choices"][0].get("content_filter_results") or {}
    assert "safe" not in json.dumps(kept)  # none of Azure's categories: every word dropped
