"""A request is read for its token estimate once per admission: ``least_estimate`` read it
(``proxy.token_estimate.sent``) for its bound, then the full estimate read it again from the
start, for a chat request's reservation (``proxy.client_keys.reserve_tokens``), a check's
charge (``proxy.check_charge``) and a regeneration's hold (``prompt_estimate``). Now the bound
keeps what it read (``LeastBound``) and the full estimate counts that; the figures are the
same as before."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import proxy.token_estimate
from proxy.check_charge import charge_check
from proxy.client_keys import reserve_tokens
from proxy.store import LimitDecision, VirtualKey
from proxy.token_estimate import estimated_tokens, least_estimate, prompt_estimate

KEY = VirtualKey("0123456789abcdef", "team-a", tpm=100_000)
CHAT: dict[str, Any] = {"model": "stub", "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Should I call my neighbour about the fence?",
     "name": "ann", "extra": {"note": "a free-form field", "n": [1, 2, 3]}},
    {"role": "user", "content": [{"type": "text", "text": "And the hedge?"},
                                 {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
], "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    "response_format": {"type": "json_object"}, "max_tokens": 50}


class AcceptingStore:
    """Holds whatever is asked, and remembers it."""

    def __init__(self) -> None:
        self.held: list[tuple[int, int]] = []

    def reserve_tokens(self, key_id: str, tpm: int, least: int, most: int) -> LimitDecision:
        self.held.append((least, most))
        return LimitDecision(True, reserved=most, reserved_at=1)


@pytest.fixture(name="reads")
def reads_fixture(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per time a request is read (``sent``)."""
    reads: list[int] = []
    read = proxy.token_estimate.sent

    def counted(params: Any) -> proxy.token_estimate.Sent:
        reads.append(1)
        return read(params)

    monkeypatch.setattr(proxy.token_estimate, "sent", counted)
    return reads


def test_a_chat_request_is_read_once_for_its_reservation(reads: list[int]) -> None:
    store = AcceptingStore()
    params = {**CHAT}
    refused = asyncio.run(reserve_tokens(store, KEY, params, 256))  # type: ignore[arg-type]
    assert refused is None
    assert len(reads) == 1
    prompt = estimated_tokens(CHAT)  # the figure is the one counted before
    assert store.held == [(prompt + 50, prompt + 50)]


def test_a_check_is_read_once_for_its_charge(reads: list[int]) -> None:
    store = AcceptingStore()
    hold = asyncio.run(charge_check(store, KEY, {"text": "Call him.", "prompt": "Hi?"}))  # type: ignore[arg-type]
    assert hold.refused is None and len(reads) == 1
    assert hold.reserved == estimated_tokens({"messages": [
        {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Call him."}]})


def test_a_regeneration_is_read_once_for_its_hold(reads: list[int]) -> None:
    assert asyncio.run(prompt_estimate(CHAT, 100_000)) == estimated_tokens(CHAT)
    reads.clear()
    asyncio.run(prompt_estimate(CHAT, 100_000))
    assert len(reads) == 1
    least = least_estimate(CHAT)[0]
    reads.clear()
    assert asyncio.run(prompt_estimate(CHAT, 1)) == least  # over the limit: the bound
    assert len(reads) == 1
