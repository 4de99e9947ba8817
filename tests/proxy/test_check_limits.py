"""How much text one check reads (issue 12, point 2): over the policy's ``checks.max_chars``
the check endpoint answers 413 and a reply is handled by ``on_error``; under it, every part of
a long text is read. Before the fix any size was scored in one classifier call, holding the
policy's only classifier thread for as long as it took (a 1 MB check: 72 s of 503s)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY
from fakes import FakeUpstream, KeywordClassifier, app_with, fake_services, post_chat
from streams import plain
from stub_upstream import StubUpstream

from proxy.call import PROMPT_CONTEXT_CHARS, judged_prompt
from proxy.judged_text import visible
from proxy.shown_text import shown
from vilmo.instruct.principles import PrincipleBank

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
LONG_CALM = "Talk to him calmly tomorrow and tell him how you feel. " * 10  # 550 characters


def test_check_endpoint_refuses_text_over_the_limit(gateway: str, stub: StubUpstream) -> None:
    response = httpx.post(f"{gateway}/values/check", headers=HEADERS, json={
        "text": LONG_CALM, "policy": "g-small-closed"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == "text"
    assert error["type"] == "invalid_request_error" and "300" in error["message"]
    within = httpx.post(f"{gateway}/values/check", headers=HEADERS, json={
        "text": LONG_CALM[:250], "policy": "g-small-closed"})
    assert within.status_code == 200 and within.json()["guard"] == "ok"


@pytest.mark.parametrize("policy", ["g-small-closed", "g-small-open"])
def test_a_reply_over_the_limit_is_never_passed_unchecked(gateway: str, stub: StubUpstream,
                                                          policy: str) -> None:
    """Under ``on_error: open`` such a reply was delivered unchecked: a client that asks for a
    long reply could choose that."""
    stub.reply = LONG_CALM + "Then punch him."
    response = plain(gateway, policy)
    assert response.status_code == 503 and "punch" not in response.text
    assert response.json()["error"]["code"] == "check_too_large"


@pytest.mark.parametrize("policy", ["g-small-closed", "g-small-open"])
def test_a_long_prompt_does_not_count_against_the_limit(gateway: str, stub: StubUpstream,
                                                        policy: str) -> None:
    """The reviewer's case: the prompt counted toward ``checks.max_chars``, so a long prompt
    failed the reply's check: under ``on_error: open`` a violent reply was delivered
    (``x-vilmo-guard: error``), under ``closed`` a 503 after the upstream was paid. The prompt is
    the judge's context only (its head, ``proxy.call.PROMPT_CONTEXT_CHARS``)."""
    stub.reply = "Then punch him."
    response = plain(gateway, policy,
                     messages=[{"role": "user", "content": LONG_CALM * 180}])  # 99,000
    assert response.status_code == 200 and "punch" not in response.text
    assert response.headers["x-vilmo-guard"] == "ok"
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"


def test_user_turns_over_the_limit_are_refused_before_the_upstream(
        gateway: str, stub: StubUpstream) -> None:
    """Under ``on_error: open`` an input check over the limit let the turns through unchecked;
    now it is the client's 413, whatever ``on_error``, and the upstream is not called."""
    calls = len(stub.received)
    response = plain(gateway, "g-small-input-open", messages=[
        {"role": "user", "content": LONG_CALM[:200]}, {"role": "user", "content": LONG_CALM}])
    assert response.status_code == 413 and len(stub.received) == calls
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == "messages"
    within = plain(gateway, "g-small-input-open", messages=[
        {"role": "user", "content": LONG_CALM[:250]}])
    assert within.status_code == 200 and within.headers["x-vilmo-guard"] == "ok"


def test_every_part_of_a_long_reply_is_checked(gateway: str, stub: StubUpstream) -> None:
    stub.reply = LONG_CALM * 20 + "Then punch him."  # 11,000 characters: several parts
    response = plain(gateway, "g-block-buffer")
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"
    assert "punch" not in response.text


def test_the_judge_reads_the_same_prompt_head_from_the_cut_prompt() -> None:
    """Cutting the prompt to ``PROMPT_CONTEXT_CHARS`` changes no score of a normal prompt: the
    classifier reads the prompt's first ``prompt_tokens`` tokens (``prompt_head``), the same
    from the cut prompt as from the whole (both read as shown: ``judged_prompt``; a prompt
    within the cut is passed as it shows, which is as written but for 3 of the 1,718 shared
    prompts, "f*ck" read as "fck" as a reply's is)."""
    from vilmo.datasets.readers import DataMissing, data_dir, fulcra
    from vilmo.judge.embedder import packaged_model_path
    from vilmo.judge.value_model import default_model_dir
    from vilmo.judge.windowing import WindowSpec, WordPieceTokenizer, prompt_head

    try:
        tokenizer = WordPieceTokenizer(packaged_model_path())
        config = json.loads((default_model_dir() / "config.json").read_text())
    except (FileNotFoundError, OSError) as error:  # pragma: no cover - no packaged model
        pytest.skip(f"no packaged classifier: {error}")
    spec = WindowSpec(prompt_tokens=int(config["window"]["prompt_tokens"]))
    try:
        shared = [row.prompt for row in fulcra(data_dir()) if row.prompt][:300]
    except (DataMissing, FileNotFoundError):
        shared = []
    prompts = [*shared, LONG_CALM * 200, "def f(x): return x[0]; " * 400,
               "Please review this log:\n" + "ERROR 42 at /var/log/app.log:17\n" * 2000]
    for prompt in prompts:
        cut, whole = judged_prompt(prompt), visible(shown(prompt)[0])  # both read as shown
        assert cut == whole or len(prompt) > PROMPT_CONTEXT_CHARS
        assert prompt_head(tokenizer, cut, spec) == prompt_head(tokenizer, whole, spec)


TINY_TURNS = [{"role": "user", "content": "a"}] * 20 + [
    {"role": "user", "content": "How do I punch him?"}]
"""39 characters of user turns, far under ``g-small-input-open``'s 300, in 21 texts to judge."""


def test_many_tiny_user_turns_count_their_check_cost(policy_dir: Path, bank: PrincipleBank,
                                                     ) -> None:
    """The reviewer's case: 90,000 one-character user turns and a violent one (90,109
    characters, under the default 100,000) made 90,001 texts for the judge, which ran past
    ``checks.timeout_s``; under ``on_error: open`` the violent turn reached the upstream
    unchecked. Each text now counts at least ``ITEM_CHARS``, so the check's cost is bounded by
    ``checks.max_chars``: such a request is the client's 413 before the judge and the
    upstream."""
    classifier = KeywordClassifier()
    services = fake_services(policy_dir, bank, classifier=classifier)
    upstream = services.upstream
    assert isinstance(upstream, FakeUpstream)
    response = asyncio.run(post_chat(services, {"model": "stub", "messages": TINY_TURNS},
                                     {"X-Vilmo-Policy": "g-small-input-open"}))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == "messages"
    assert upstream.calls == [] and classifier.calls == []
    few = asyncio.run(post_chat(services, {"model": "stub", "messages": TINY_TURNS[-3:]},
                                {"X-Vilmo-Policy": "g-small-input-open"}))
    assert few.status_code == 200 and few.headers["x-vilmo-input-violations"] == "mft.care"


def test_the_check_route_counts_each_turn_as_well(policy_dir: Path, bank: PrincipleBank,
                                                  ) -> None:
    """/v1/values/check ``messages``: the same bound as the chat route's input check."""
    classifier = KeywordClassifier()
    services = fake_services(policy_dir, bank, classifier=classifier)

    async def check(messages: list[dict[str, str]]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/values/check", json={
                "messages": messages, "policy": "g-small-input-open"})

    response = asyncio.run(check(TINY_TURNS))
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == "messages"
    assert classifier.calls == []
    few = asyncio.run(check(TINY_TURNS[-3:]))
    assert few.status_code == 200 and few.json()["input"]["violations"] == ["mft.care"]


@pytest.mark.parametrize("field", ["text", "messages"])
def test_the_check_route_reads_a_large_text_off_the_event_loop(
        policy_dir: Path, bank: PrincipleBank, monkeypatch: pytest.MonkeyPatch,
        field: str) -> None:
    """The reviewer's case: /v1/values/check read the whole ``text`` (or the last assistant
    turn) for the judge on the event loop, before its size check: 3.5 MB of ``\\u0041 ``
    escapes held every other request of the worker, ``/healthz`` included, for 2.6 s and
    was then refused (413). Past ``OFF_LOOP_CHARS`` it is read in a worker thread, as the
    chat route's input check reads a large input (one over ``checks.max_chars`` is now not
    read at all: ``test_counted_before_read.py``)."""
    import threading

    import proxy.check
    from proxy.judged_text import Judged
    from proxy.judged_text import judged as real
    from proxy.off_loop import OFF_LOOP_CHARS

    read_on: list[bool] = []

    def recording(text: str, *args: Any) -> Judged:
        read_on.append(threading.current_thread() is threading.main_thread())
        return real(text, *args)

    monkeypatch.setattr(proxy.check, "judged", recording)
    services = fake_services(policy_dir, bank, classifier=KeywordClassifier())
    text = "\\u0041 " * (OFF_LOOP_CHARS // 7 + 10)
    body: dict[str, object] = {"policy": "g-input-annotate"}  # checks.max_chars: 100,000
    body |= ({"text": text} if field == "text" else {"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": text}]})

    async def check() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_with(services))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.post("/v1/values/check", json=body)

    response = asyncio.run(check())
    assert response.status_code == 200, response.text
    assert read_on == [False]


@pytest.mark.parametrize(("shown", "refused"), [("\u200b", False), ("x", True)])
def test_a_large_input_is_counted_off_the_event_loop(
        policy_dir: Path, monkeypatch: pytest.MonkeyPatch, shown: str, refused: bool) -> None:
    """Review rv5: the ``checks.max_chars`` pre-check (``shown_chars``: ``visible`` over every
    text) ran on the event loop before the worker thread's read, and a text of invisible
    characters counts 0, so 4 MiB of U+200B was never refused first and held the loop about
    150-240 ms a request. Past ``OFF_LOOP_CHARS`` it is counted in the same worker thread as
    the read, and an input over the limit is refused there before any decode level is read."""
    import threading

    import proxy.inputs
    from proxy.errors import PayloadTooLarge
    from proxy.inputs import checked_input
    from proxy.judged_text import judged as real_judged
    from proxy.judged_text import visible as real_visible
    from proxy.off_loop import OFF_LOOP_CHARS
    from vilmo.policy import load_policy

    counted_on: list[bool] = []
    read: list[str] = []

    def visible(text: str) -> str:
        counted_on.append(threading.current_thread() is threading.main_thread())
        return real_visible(text)

    def judged(text: str) -> object:
        read.append(text)
        return real_judged(text)

    monkeypatch.setattr(proxy.inputs, "visible", visible)
    monkeypatch.setattr(proxy.inputs, "judged", judged)
    policy = load_policy(policy_dir / "g-small-input-open.yaml")  # checks.max_chars: 300
    messages = [{"role": "user", "content": "hello " + shown * (OFF_LOOP_CHARS + 10)}]
    if refused:
        with pytest.raises(PayloadTooLarge):
            asyncio.run(checked_input(messages, policy))
        assert read == []
    else:
        assert asyncio.run(checked_input(messages, policy))
    assert counted_on and not any(counted_on)
