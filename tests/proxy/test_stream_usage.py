"""Streams charge their tokens to the key's ``tpm`` whether or not the client asked for usage:
the gateway always asks the upstream (``stream_options.include_usage``) and drops the usage
chunk the client did not ask for; a client that leaves before the usage chunk is charged an
estimate. Through HTTP with the official openai client (or httpx, to leave a stream), LiteLLM
and the stub upstream."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import guard_policy
from fake_gateway import serve_fake_gateway
from store_gateway import admin, wait_for
from stub_upstream import StubUpstream

from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.slow  # a served gateway (fakes behind it: no model is loaded)

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Tell me about bread."}]
STUB_TOKENS = 11 + 12  # the stub's usage for its default reply (12 words)


@pytest.fixture(name="base")
def base_fixture(tmp_path: Path, stub: StubUpstream) -> Iterator[str]:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, policies)
    for mode in ("monitor", "chunked"):
        (policies / f"leave-{mode}.yaml").write_text(
            f"name: leave-{mode}\n{guard_policy('block', mode)}")
    (policies / "leave-off.yaml").write_text(
        "name: leave-off\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_fake_gateway(policies, store, stub_url=stub.url) as (url, _):
        yield url


def stream(client: openai.OpenAI, **extra: object) -> list[openai.types.chat.ChatCompletionChunk]:
    return list(client.chat.completions.create(model="stub", messages=MESSAGES, stream=True,
                                               **extra))  # type: ignore[call-overload]


def test_a_stream_without_include_usage_is_charged_and_gets_no_usage(
        base: str, stub: StubUpstream) -> None:
    key = admin("POST", f"{base}/admin/keys", json={"name": "streamer", "tpm": 40}).json()["key"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    chunks = stream(client)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == stub.reply
    assert all(c.choices and c.usage is None for c in chunks)  # as the client asked: no usage
    assert stub.received[-1].body["stream_options"] == {"include_usage": True}
    # 2 x 23 tokens: over 40 once charged. A stream's charge is settled just after it ends, and
    # until then its reservation holds the key's room, so a refusal counts only when it holds
    # after the charges have settled (before, an early 429 on the second stream made this flaky).
    refused: list[openai.RateLimitError] = []
    deadline = time.monotonic() + 10
    while not refused:
        assert time.monotonic() < deadline, "a key with tpm 40 took every stream"
        try:
            stream(client)
        except openai.RateLimitError:
            time.sleep(0.3)
            try:
                stream(client)
            except openai.RateLimitError as error:
                refused.append(error)
    assert refused[0].code == "tpm"


def test_a_client_that_asks_for_usage_still_gets_it(base: str, stub: StubUpstream) -> None:
    key = admin("POST", f"{base}/admin/keys", json={"name": "counter", "tpm": 1000}).json()["key"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    chunks = stream(client, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == STUB_TOKENS
    assert stub.received[-1].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("policy", ["leave-monitor", "leave-chunked", "leave-off"])
def test_a_client_that_leaves_before_the_usage_chunk_is_charged_an_estimate(
        base: str, stub: StubUpstream, policy: str) -> None:
    """The reviewer's case: leaving each stream mid-reply was charged 0 tokens, so a key with
    ``tpm: 40`` took any number of replies of about 23 tokens. Now each left stream is charged
    the tokens of the messages sent and of the text the upstream produced (about 20 here)."""
    stub.chunk_delay = 0.05
    key = admin("POST", f"{base}/admin/keys",
                json={"name": "leaver", "tpm": 40, "policy": policy}).json()["key"]
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "stub", "stream": True, "messages": MESSAGES}

    def leave_mid_stream() -> int:
        """Read the stream up to the word "kind" of the stub's reply, then leave."""
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers,
                          timeout=10) as response:
            if response.status_code == 200:
                for line in response.iter_lines():
                    if "kind" in line:
                        break
            return response.status_code

    assert leave_mid_stream() == 200
    wait_for(lambda: leave_mid_stream() == 429, timeout=5)  # the third at the latest
