"""A key's ``tpm`` holds what a request's text may cost, however it is written: the estimate
counted words, so one 200,000-character word was one token and an image none, and ten
concurrent one-word requests on a ``tpm: 1000`` key all passed while the upstream billed 500
times the limit. And the estimate of a large body is made off the event loop (it held a worker
2.2 s for 3.9 MB of punctuation), after a bound that costs nothing to count."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from store_gateway import burst, keyed_gateway_fixture, new_key, store_backend_fixture
from stub_upstream import StubUpstream

import proxy.token_estimate
from proxy.token_estimate import IMAGE_LOW_TOKENS, IMAGE_TOKENS, estimated_tokens, text_tokens

__all__ = ["keyed_gateway_fixture", "store_backend_fixture"]


def test_a_long_word_costs_its_bytes_and_an_image_its_fixed_cost() -> None:
    assert text_tokens("a" * 200_000) == 50_000  # bytes / 4: it was 1
    assert text_tokens("x" * 3_000) == 750
    assert text_tokens("Hello, you!") == 4  # English: about its words and marks
    assert text_tokens("ключ" * 100) == 400  # a non-ASCII character's bytes past its first
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    low = {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                              "detail": "low"}}
    body = {"messages": [{"role": "user", "content": [image, low]}]}
    assert estimated_tokens(body) == IMAGE_TOKENS + IMAGE_LOW_TOKENS  # they were 0
    refusal = {"messages": [{"role": "assistant", "content": [
        {"type": "refusal", "refusal": "no " * 1000}]}]}
    assert estimated_tokens(refusal) >= 750  # a refusal part's text is read and billed


@pytest.mark.slow
def test_one_long_word_cannot_pass_a_keys_tpm(base: str, stub: StubUpstream) -> None:
    """The reviewer's case: ten concurrent requests of one 3,000-character word and
    ``max_tokens: 16`` on a ``tpm: 1000`` key; each holds 766 now, so one runs at a time."""
    stub.slow_seconds = 1.0  # all ten in flight together
    key = new_key(base, tpm=1000)
    body = {"model": "stub-slow", "max_tokens": 16,
            "messages": [{"role": "user", "content": "a" * 3_000}]}
    seen = len(stub.received)
    replies = burst(base, key, body, 10)
    assert [r.status_code for r in replies].count(200) == 1
    assert len(stub.received) - seen == 1
    assert {r.json()["error"]["code"] for r in replies if r.status_code != 200} == {"tpm"}


@pytest.mark.slow
@pytest.mark.parametrize("content", [
    "a" * 150_000,  # the served test's body limit is 200,000 bytes
    [{"type": "text", "text": "What is this?"},
     {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]])
def test_what_costs_more_than_the_keys_tpm_is_refused_before_the_upstream(
        base: str, stub: StubUpstream, content: object) -> None:
    key = new_key(base, tpm=1000)
    seen = len(stub.received)
    reply = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {key}"},
                       json={"model": "stub", "max_tokens": 16,
                             "messages": [{"role": "user", "content": content}]})
    assert reply.status_code == 429, reply.text
    assert "can never be admitted" in reply.json()["error"]["message"]
    assert len(stub.received) == seen


@pytest.mark.slow
def test_a_large_body_is_estimated_off_the_event_loop(
        base: str, stub: StubUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not on the event loop, where 3.9 MB of punctuation held every request of the worker
    2.2 s (150,000 characters here: the test's body limit); and not at all for a key it can
    never fit, whose bound (characters / 4) says so."""
    counted: list[bool] = []  # per text counted: on the event loop?
    count = proxy.token_estimate.text_tokens

    def spy(text: str) -> int:
        try:
            asyncio.get_running_loop()
            counted.append(True)
        except RuntimeError:
            counted.append(False)
        return count(text)

    monkeypatch.setattr(proxy.token_estimate, "text_tokens", spy)
    body = {"model": "stub", "max_tokens": 5,
            "messages": [{"role": "user", "content": "!" * 150_000}]}
    small = new_key(base, tpm=1000)
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60,
                       headers={"authorization": f"Bearer {small}"})
    assert reply.status_code == 429 and "never" in reply.json()["error"]["message"]
    assert counted == []  # refused on its bound: never counted
    large = new_key(base, tpm=10**9)
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60,
                       headers={"authorization": f"Bearer {large}"})
    assert reply.status_code != 429, reply.text
    assert counted[:1] == [False]  # the admission's estimate: in a worker thread
