"""A text over ``checks.max_chars`` is refused before the judge reads it (review rv1, r4).

``/v1/values/check`` read its ``text`` (or the last assistant turn) at every decode level
(``judged_text``) and only then compared its size with ``checks.max_chars``; a reply was read
whole and only the guard refused it by its size afterwards. The chat route's input check
counted first (``proxy.inputs._counted_then_read``). 1.5 million characters of escapes took
3-3.7 s of a worker thread to get their 413, and eight such requests filled the event loop's
default executor, which also runs every keyed request's store calls: another tenant's small
chat request waited 9 s. Now the count comes first on every path, and client-sized work runs
in an executor of its own (``proxy.off_loop.client_work``)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeUpstream, KeywordClassifier, app_with, fake_services, post_chat

import proxy.call
import proxy.check
from proxy.judged_text import Judged
from proxy.judged_text import judged as real_judged
from proxy.off_loop import OFF_LOOP_CHARS, off_loop_past
from proxy.services import Services
from vilmo.instruct.principles import PrincipleBank

ESCAPES = "\\\\u0041\\\\n\\\\\\\""
"""Escapes at several levels: the costliest text to read per character."""


def _check(services: Services, body: dict[str, object]) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/values/check", json=body)

    return asyncio.run(post())


@pytest.mark.parametrize("size", [301, OFF_LOOP_CHARS + 1])
@pytest.mark.parametrize("field", ["text", "messages"])
def test_the_check_route_refuses_an_oversized_text_unread(
        policy_dir: Path, bank: PrincipleBank, monkeypatch: pytest.MonkeyPatch, field: str,
        size: int) -> None:
    read: list[int] = []

    def recording(text: str, *args: Any) -> Judged:
        read.append(len(text))
        return real_judged(text, *args)

    monkeypatch.setattr(proxy.check, "judged", recording)
    services = fake_services(policy_dir, bank, classifier=KeywordClassifier())
    text = (ESCAPES * (size // len(ESCAPES) + 1))[:size]
    body: dict[str, object] = {"policy": "g-small-input-open"}  # checks.max_chars: 300
    body |= ({"text": text} if field == "text" else {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": text}]})
    response = _check(services, body)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == field
    assert f"{size} characters to check" in error["message"]
    assert read == []  # refused by its count: never read
    within = _check(services, {**body, "text": text[:250]} if field == "text" else body | {
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "content": text[:250]}]})
    assert within.status_code == 200 and read == [250]


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every reply the gateway's call reads for the judge (``proxy.call``'s
    ``judged``), in order."""
    lengths: list[int] = []

    def recording(text: str, *args: Any) -> Judged:
        lengths.append(len(text))
        return real_judged(text, *args)

    monkeypatch.setattr(proxy.call, "judged", recording)
    return lengths


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("size", [301, OFF_LOOP_CHARS + 1])
def test_a_reply_over_the_limit_is_refused_unread(
        policy_dir: Path, bank: PrincipleBank, read: list[int], size: int, stream: bool,
        ) -> None:
    """The guard's refusal as before (``check_too_large``, nothing of the reply sent), without
    reading the reply first."""
    upstream = FakeUpstream()
    upstream.reply = (ESCAPES * (size // len(ESCAPES) + 1))[:size - 7] + " punch."
    services = fake_services(policy_dir, bank, upstream, KeywordClassifier())
    body: dict[str, object] = {"model": "stub", "stream": stream,
                               "messages": [{"role": "user", "content": "Say calm words."}]}
    response = asyncio.run(post_chat(services, body, {"X-Vilmo-Policy": "g-small-open"}))
    assert "check_too_large" in response.text and "punch" not in response.text
    if not stream:
        assert response.status_code == 503
    assert read == []


def test_a_reply_within_the_limit_is_still_read(policy_dir: Path, bank: PrincipleBank,
                                                read: list[int]) -> None:
    upstream = FakeUpstream()
    upstream.reply = "Then st\\u0061b him."
    services = fake_services(policy_dir, bank, upstream, KeywordClassifier())
    body: dict[str, object] = {"model": "stub",
                               "messages": [{"role": "user", "content": "Say calm words."}]}
    response = asyncio.run(post_chat(services, body, {"X-Vilmo-Policy": "g-small-closed"}))
    assert read == [len(upstream.reply)]
    assert response.status_code == 200 and "REFUSED-BY-POLICY" in response.text  # blocked


def test_client_sized_work_never_holds_the_default_executor() -> None:
    """More blocked client-sized jobs than the default executor has threads: a store call
    (``asyncio.to_thread``, as ``proxy.client_keys`` makes them) still runs at once."""
    release = threading.Event()

    async def scenario() -> str:
        jobs = [asyncio.ensure_future(off_loop_past(OFF_LOOP_CHARS + 1, OFF_LOOP_CHARS,
                                                    release.wait, 10))
                for _ in range(40)]  # the default executor has at most 32 threads
        await asyncio.sleep(0.05)
        try:
            return await asyncio.wait_for(asyncio.to_thread(lambda: "stored"), 5)
        finally:
            release.set()
            await asyncio.gather(*jobs)

    try:
        assert asyncio.run(scenario()) == "stored"
    finally:
        release.set()
