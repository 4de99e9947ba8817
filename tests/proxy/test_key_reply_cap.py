"""A virtual key's ``tpm`` is a ceiling, not only an admission check: the reviewer's case was a
``tpm: 1000`` key whose request without ``max_tokens`` and with ``n: 8`` was admitted with one
token of room, and whose upstream could then generate 8 x 4,000 tokens (32 times the key's
limit in one minute). Now the replies are capped at what the window held for the request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from store_gateway import admin, serve_gateway, store_backend_fixture, store_config
from stub_upstream import StubUpstream

from proxy.token_estimate import estimated_tokens

__all__ = ["store_backend_fixture"]
MESSAGES = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(name="base")
def base_fixture(stub: Any, policy_dir: Path, classifier: Any,
                 store_backend: dict[str, Any]) -> Iterator[str]:
    with serve_gateway(store_config(stub.url, policy_dir, store_backend), classifier) as url:
        yield url


def post(base: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {key}"})


@pytest.mark.slow
def test_a_request_without_max_tokens_gets_a_share_of_its_keys_room(
        base: str, stub: StubUpstream) -> None:
    """A quarter of the key's tpm across its 8 choices (``proxy.client_keys.UNCAPPED_SHARE``),
    not the whole window."""
    reply = admin("POST", f"{base}/admin/keys", json={"name": "capped", "tpm": 1000})
    key = reply.json()["key"]
    assert post(base, key, {"model": "stub", "messages": MESSAGES, "n": 8}).status_code == 200
    sent = stub.received[-1].body
    cap = sent["max_completion_tokens"]
    assert "max_tokens" not in sent
    assert cap == 1000 // 4 // 8
    assert estimated_tokens(sent) + 8 * cap <= 1000 + 100  # the instruction's own
    asked = {"model": "stub", "messages": MESSAGES, "max_tokens": 30}
    assert post(base, key, asked).status_code == 200
    assert stub.received[-1].body["max_tokens"] == 30  # held in full: forwarded as it was
    assert "max_completion_tokens" not in stub.received[-1].body


@pytest.mark.slow
def test_a_key_without_tpm_is_forwarded_as_the_client_sent_it(
        base: str, stub: StubUpstream) -> None:
    key = admin("POST", f"{base}/admin/keys", json={"name": "open", "rpm": 100}).json()["key"]
    assert post(base, key, {"model": "stub", "messages": MESSAGES}).status_code == 200
    sent = stub.received[-1].body
    assert "max_completion_tokens" not in sent and "max_tokens" not in sent


def test_a_reply_cap_larger_than_what_was_held_is_lowered() -> None:
    """As when the store is unreachable and ``limits_on_error: fail_open`` admits: the cap is
    then the key's whole ``tpm`` less the messages."""
    from proxy.client_keys import cap_replies  # here: the served tests run without it

    params: dict[str, Any] = {"max_tokens": 5000, "max_completion_tokens": 10}
    cap_replies(params, 100)
    assert params == {"max_tokens": 100, "max_completion_tokens": 10}
    open_ended: dict[str, Any] = {}
    cap_replies(open_ended, 7)
    assert open_ended == {"max_completion_tokens": 7}
