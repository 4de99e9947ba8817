"""A failed check fails open only for a text small enough (``checks.fail_open_max_chars``).

The reviewer's case: under ``on_error: open`` with ``checks.input``, one user turn of 39,498
characters (under the default ``checks.max_chars`` of 100,000) ending in a violent sentence
made the real judge run past ``checks.timeout_s`` (it reads about 0.2-0.4 ms a character on
2 cores), so the guard failed open and the upstream got the unchecked turn; a second such
request was refused as ``Overloaded`` and failed open too, and so did a long reply the client
asked for. The client chooses the size, so a check over ``fail_open_max_chars`` now fails
closed on any failure, whatever ``on_error``; a smaller one still fails open.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from classifier_fakes import GatedClassifier
from fakes import CALM, VIOLENT, FakeUpstream, StalledClassifier, fake_services, post_chat

from proxy.errors import GuardFailed
from proxy.guard import FAIL_OPEN_READ_FACTOR, Guard, checked_chars
from proxy.judged_text import judged_text
from proxy.metrics import Metrics
from proxy.outcome import FAILED_OPEN
from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.policy import Policy
from vilmo.policy_store import SHIPPED_POLICY_DIR

FAIL_OPEN_MAX_CHARS = 500
CHECKS = f"timeout_s: 0.2, fail_open_max_chars: {FAIL_OPEN_MAX_CHARS}"
POLICIES = {
    **{f"fo-input-{action}": f"values:\n  mft.care: {{action: {action}}}\n"
                             f"checks: {{input: true, output: false, {CHECKS}}}\n"
       for action in ("block", "annotate")},
    **{f"fo-output-{mode}": "values:\n  mft.care: {action: block}\n"
                            f"checks: {{input: false, output: true, {CHECKS}}}\n"
                            f"streaming: {{mode: {mode}, window_tokens: 20}}\n"
       for mode in ("buffer", "chunked")},
}
LONG = f"{CALM} " * 10 + VIOLENT  # 662 characters: over the limit
SHORT = VIOLENT  # 62 characters: under it


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    shutil.copy(SHIPPED_POLICY_DIR / "default.yaml", tmp_path / "default.yaml")
    for name, checks in POLICIES.items():
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\n{checks}on_error: open\n"
            "refusal: REFUSED-BY-POLICY\n")
    return tmp_path


@pytest.fixture
def judge() -> Iterator[StalledClassifier]:
    classifier = StalledClassifier()
    yield classifier
    classifier.release.set()


def ask(policies: Path, bank: PrincipleBank, judge: StalledClassifier, upstream: FakeUpstream,
        policy: str, user_turn: str, *, stream: bool = False) -> httpx.Response:
    """One chat request whose checks all run past the policy's timeout."""
    services = fake_services(policies, bank, upstream, classifier=judge)

    async def main() -> httpx.Response:
        try:
            return await post_chat(services, {
                "model": "stub", "stream": stream,
                "messages": [{"role": "user", "content": user_turn}]}, {"X-Vilmo-Policy": policy})
        finally:
            judge.release.set()
            await services.guard.aclose()

    return asyncio.run(main())


def test_a_long_user_turn_whose_check_times_out_never_reaches_the_upstream(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier) -> None:
    assert checked_chars([ScoreInput(LONG)]) > FAIL_OPEN_MAX_CHARS
    upstream = FakeUpstream()
    response = ask(policies, bank, judge, upstream, "fo-input-block", LONG)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "guard_unavailable" and "fail_open_max_chars" in error["message"]
    assert upstream.calls == []


def test_a_long_user_turn_fails_the_request_when_input_rules_only_annotate(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier) -> None:
    """Input rules that cannot stop the request do not hold the upstream call back; the
    failed check still fails the request, as under ``on_error: closed``."""
    upstream = FakeUpstream()
    response = ask(policies, bank, judge, upstream, "fo-input-annotate", LONG)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "guard_unavailable"


@pytest.mark.parametrize("policy", ["fo-input-block", "fo-input-annotate"])
def test_a_short_user_turn_whose_check_times_out_still_fails_open(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier, policy: str) -> None:
    upstream = FakeUpstream()
    response = ask(policies, bank, judge, upstream, policy, SHORT)
    assert response.status_code == 200, response.text
    assert [m["content"] for m in upstream.calls[0]["messages"] if m["role"] == "user"] == [
        SHORT]


@pytest.mark.parametrize("stream", [False, True])
def test_a_long_reply_whose_check_times_out_is_never_delivered(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier, stream: bool) -> None:
    upstream = FakeUpstream()
    upstream.reply = LONG
    response = ask(policies, bank, judge, upstream, "fo-output-buffer", "Tell me a story.",
                   stream=stream)
    assert response.status_code == 503, response.text
    assert "punch" not in response.text
    assert response.json()["error"]["code"] == "guard_unavailable"


def test_a_chunked_reply_stops_where_its_check_grows_over_the_limit(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier) -> None:
    """Each window's check reads the reply so far: the first windows fail open, the ones
    over the limit fail closed, so the violent end is never released."""
    upstream = FakeUpstream()
    upstream.reply = LONG
    response = ask(policies, bank, judge, upstream, "fo-output-chunked", "Tell me a story.",
                   stream=True)
    assert response.status_code == 200 and "punch" not in response.text
    assert "calmly" in response.text  # the windows under the limit were passed open
    assert "guard_unavailable" in response.text
    assert response.text.endswith("data: [DONE]\n\n")


@pytest.mark.parametrize("stream", [False, True])
def test_a_short_reply_whose_check_times_out_still_fails_open(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier, stream: bool) -> None:
    upstream = FakeUpstream()
    upstream.reply = SHORT
    response = ask(policies, bank, judge, upstream, "fo-output-buffer", "Tell me a story.",
                   stream=stream)
    assert response.status_code == 200 and "punch" in response.text
    assert response.headers["x-vilmo-guard"] == "error"


def test_an_overloaded_judge_refuses_a_large_check_closed_a_small_one_open() -> None:
    """The second large request of the reviewer's case: refused as ``Overloaded`` (the
    judge's queue could not reach it in time), it failed open as well."""
    policy = Policy.model_validate({
        "name": "open", "values": {"mft.care": {}}, "on_error": "open",
        "checks": {"fail_open_max_chars": FAIL_OPEN_MAX_CHARS}})
    judge = GatedClassifier(BUILTIN_VALUES)
    guard = Guard(lambda p: judge, Metrics(["stub"]))

    async def main() -> tuple[GuardFailed, object]:
        first = asyncio.ensure_future(guard.check(policy, [ScoreInput("x" * 2000)], "output"))
        while not judge.started.is_set():
            await asyncio.sleep(0.001)
        batcher = guard._batcher(policy)
        batcher.seconds_per_char = 4 * policy.checks.timeout_s / 2000 * batcher.workers
        with pytest.raises(GuardFailed) as refused:
            await guard.check(policy, [ScoreInput(LONG)], "input")
        small = await guard.check(policy, [ScoreInput(SHORT)], "input")
        judge.release.set()
        await first
        await guard.aclose()
        return refused.value, small

    error, small = asyncio.run(main())
    assert error.status == 503 and error.code == "guard_unavailable"
    assert error.headers == {"Retry-After": "1"} and "fail_open_max_chars" in error.message
    assert small is FAILED_OPEN


JSON_TURN = json.dumps({"path": "a.py", "content": "".join(
    f'def helper_{i}(value):\n    """Return the value doubled."""\n    return value * 2\n\n'
    for i in range(4))})
"""Code in a JSON string: 387 characters as sent, under the limit, read as 617."""
STACKED = "word " * 55 + "x\\u005cu005cu005cu0062y."
"""300 characters whose one escape reads other words at each of its five levels: read as
1,450, over ``FAIL_OPEN_READ_FACTOR`` times the limit."""


def test_a_json_user_turn_under_the_limit_as_sent_still_fails_open(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier) -> None:
    """Review rv4: a check counted as the judge reads it, so JSON counted 1.4-2.8 times its
    size and a check well under ``fail_open_max_chars`` as sent failed closed on a timeout.
    What counts is its length as sent (as before its escapes were read)."""
    assert len(JSON_TURN) < FAIL_OPEN_MAX_CHARS < len(judged_text(JSON_TURN))
    assert len(judged_text(JSON_TURN)) <= FAIL_OPEN_READ_FACTOR * FAIL_OPEN_MAX_CHARS
    upstream = FakeUpstream()
    response = ask(policies, bank, judge, upstream, "fo-input-block", JSON_TURN)
    assert response.status_code == 200, response.text
    assert upstream.calls[0]["messages"][-1]["content"] == JSON_TURN


def test_a_turn_that_reads_far_more_than_the_limit_still_fails_closed(
        policies: Path, bank: PrincipleBank, judge: StalledClassifier) -> None:
    """What the judge reads is bounded apart: a text under the limit as sent that it reads at
    more than ``FAIL_OPEN_READ_FACTOR`` times the limit could choose its own timeout."""
    assert len(STACKED) < FAIL_OPEN_MAX_CHARS
    assert len(judged_text(STACKED)) > FAIL_OPEN_READ_FACTOR * FAIL_OPEN_MAX_CHARS
    upstream = FakeUpstream()
    response = ask(policies, bank, judge, upstream, "fo-input-block", STACKED)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "guard_unavailable"
    assert f"{FAIL_OPEN_READ_FACTOR} times checks.fail_open_max_chars" in error["message"]
    assert upstream.calls == []
