"""Streams charge their tokens to the key's ``tpm`` whether or not the client asked for usage:
the gateway always asks the upstream (``stream_options.include_usage``) and drops the usage
chunk the client did not ask for. Through HTTP with the official openai client, LiteLLM and the
stub upstream."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
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
    stream(client)  # 2 x 23 tokens: over 40 once charged
    refused: list[openai.RateLimitError] = []

    def over_tpm() -> bool:
        try:
            stream(client)
        except openai.RateLimitError as error:
            refused.append(error)
            return True
        return False

    wait_for(over_tpm, timeout=3)
    assert refused[0].code == "tpm"


def test_a_client_that_asks_for_usage_still_gets_it(base: str, stub: StubUpstream) -> None:
    key = admin("POST", f"{base}/admin/keys", json={"name": "counter", "tpm": 1000}).json()["key"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    chunks = stream(client, stream_options={"include_usage": True})
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == STUB_TOKENS
    assert stub.received[-1].body["stream_options"] == {"include_usage": True}
