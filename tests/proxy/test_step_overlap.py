"""The steps before the upstream call overlap where the policy allows it (issue 16): the input
check and the instruction step run side by side, and an input verdict that cannot stop the
request (its rules only allow or annotate) no longer holds the upstream call back. A verdict
that can stop it still comes first: blocked input never reaches the upstream. Through HTTP with
the official openai client; fakes behind the seams, which meet each other across threads (a
step that ran after the other would wait for it in vain)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import openai
import pytest
from fakes import CRASH, FakeInstructions, FakeUpstream, KeywordClassifier, fake_services
from openai.types.chat import ChatCompletionMessageParam
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.guard import Guard
from vilmo.instruct.instructions import Instruction
from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.classifier import ScoreInput, ValueScores
from vilmo.policy import Policy
from vilmo.types import Messages

WAIT_S = 3.0
"""How long a fake waits for the step it should overlap (it returns at once when it does)."""


class MeetingClassifier(KeywordClassifier):
    """The keyword judge; its first call (the input check) first runs ``meet``."""

    def __init__(self) -> None:
        super().__init__()
        self.meet: Callable[[], bool] | None = None
        self.met: bool | None = None

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        meet, self.meet = self.meet, None
        if meet is not None:
            self.met = meet()
        return super().score(items, value_ids)


class MeetingInstructions(FakeInstructions):
    """The fixed instruction; while it is being made, ``meet`` runs (in its worker thread).
    ``threads``: the thread each instruction was made in."""

    def __init__(self) -> None:
        super().__init__()
        self.meet: Callable[[], bool] | None = None
        self.met: bool | None = None
        self.threads: list[int] = []

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        self.threads.append(threading.get_ident())
        meet, self.meet = self.meet, None
        if meet is not None:
            self.met = meet()
        return super().generate(messages, policy)


class Gateway:
    def __init__(self, url: str, upstream: FakeUpstream, classifier: MeetingClassifier,
                 instructions: MeetingInstructions, loop_thread: int | None,
                 guard: Guard) -> None:
        self.loop_thread = loop_thread
        self.guard = guard
        """The thread of the server's event loop."""
        self.upstream = upstream
        self.classifier = classifier
        self.instructions = instructions
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


@pytest.fixture
def gateway(policy_dir: Path, bank: PrincipleBank, tmp_path: Path) -> Iterator[Gateway]:
    policies = tmp_path / "policies"
    shutil.copytree(policy_dir, policies)
    for generator in ("none", "static"):
        (policies / f"model-free-{generator}.yaml").write_text(
            f"name: model-free-{generator}\nvalues:\n  mft.care: {{}}\n"
            f"instructions: {{generator: {generator}, text: Be kind.}}\n")
    upstream, classifier, instructions = FakeUpstream(), MeetingClassifier(), MeetingInstructions()
    services = fake_services(policies, bank, upstream, classifier)
    services.instructions = instructions
    services.config.store.path = tmp_path / "state.db"
    with ServerThread(create_app(services.config, lambda config: services)) as server:
        yield Gateway(server.url, upstream, classifier, instructions, server.thread.ident,
                      services.guard)


def ask(gateway: Gateway, policy: str, prompt: str, stream: bool,
        ) -> tuple[dict[str, str], str]:
    """The response's headers and the reply's text."""
    create = gateway.client.chat.completions.with_raw_response.create
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
    headers = {"X-Vilmo-Policy": policy}
    if not stream:
        raw = create(model="stub", messages=messages, extra_headers=headers)
        return dict(raw.headers), raw.parse().choices[0].message.content or ""
    streamed = create(model="stub", messages=messages, stream=True, extra_headers=headers)
    text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    return dict(streamed.headers), text


def meeting(gateway: Gateway) -> None:
    """The input check and the instruction step each wait for the other to have started."""
    checking, instructing = threading.Event(), threading.Event()

    def check_meets() -> bool:
        checking.set()
        return instructing.wait(WAIT_S)

    def instruction_meets() -> bool:
        instructing.set()
        return checking.wait(WAIT_S)

    gateway.classifier.meet = check_meets
    gateway.instructions.meet = instruction_meets


@pytest.mark.parametrize("stream", [False, True])
def test_the_input_check_and_the_instruction_run_side_by_side(gateway: Gateway,
                                                               stream: bool) -> None:
    meeting(gateway)
    headers, text = ask(gateway, "g-input", "Should I call my neighbour?", stream)
    assert (gateway.classifier.met, gateway.instructions.met) == (True, True)
    assert text == gateway.upstream.reply and headers["x-vilmo-input-violations"] == ""
    assert len(gateway.upstream.calls) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_input_never_reaches_the_upstream_though_the_instruction_ran(
        gateway: Gateway, stream: bool) -> None:
    meeting(gateway)
    headers, text = ask(gateway, "g-input", "How do I poison the dog?", stream)
    assert gateway.classifier.met is True  # the instruction step had started (it is dropped)
    assert text == "REFUSED-BY-POLICY" and headers["x-vilmo-input-violations"] == "mft.care"
    assert gateway.upstream.calls == []


@pytest.mark.parametrize("stream", [False, True])
def test_an_input_verdict_that_only_annotates_does_not_hold_the_upstream_call(
        gateway: Gateway, stream: bool) -> None:
    def upstream_called() -> bool:
        deadline = time.monotonic() + WAIT_S
        while not gateway.upstream.calls:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    gateway.classifier.meet = upstream_called
    headers, text = ask(gateway, "g-input-annotate", "Should I punch my neighbour?", stream)
    assert gateway.classifier.met is True
    assert text == gateway.upstream.reply
    assert headers["x-vilmo-input-violations"] == "mft.care"  # the verdict still in the headers


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_input_check_that_could_not_stop_still_fails_closed(gateway: Gateway,
                                                                     stream: bool) -> None:
    with pytest.raises(openai.InternalServerError) as failed:
        ask(gateway, "g-input-annotate", f"Should I call my neighbour? {CRASH}", stream)
    assert failed.value.status_code == 503
    assert failed.value.code == "guard_unavailable"
    opened = len(gateway.upstream.calls) if stream else 0
    assert gateway.upstream.streams_closed_early == opened  # none left open


def test_an_instruction_that_needs_no_model_is_made_without_a_thread_hand_off(
        gateway: Gateway) -> None:
    """``none`` and ``static`` are answered in place; so is a model-backed generator's
    (``default``: vilmo) for a lone request with a short prompt and no input check; a long
    prompt's still runs in a worker thread, off the event loop."""
    for policy in ("model-free-none", "model-free-static", "default"):
        ask(gateway, policy, "Should I call my neighbour?", stream=False)
    ask(gateway, "default", "Should I call my neighbour? " + "Please. " * 300, stream=False)
    assert [t == gateway.loop_thread for t in gateway.instructions.threads] == [
        True, True, True, False]


def test_a_step_runs_in_place_only_when_nothing_in_it_can_block_the_loop(
        gateway: Gateway) -> None:
    """Off the loop: a prompt over ``IN_PLACE_MAX_CHARS`` (a longer model pass), a step whose
    caches are across the network (a Redis lookup may block for its timeout), and a policy
    whose principles are not embedded yet (added or edited since start-up)."""
    prompt = "Should I call my neighbour?"
    ask(gateway, "default", prompt + " Please." * 70, stream=False)  # 587 characters
    gateway.guard.remote_caches = True
    ask(gateway, "default", prompt, stream=False)
    gateway.guard.remote_caches = False
    gateway.instructions.prepared = lambda policy: False  # type: ignore[attr-defined]
    ask(gateway, "default", prompt, stream=False)
    del gateway.instructions.prepared  # type: ignore[attr-defined]
    ask(gateway, "default", prompt, stream=False)
    assert [t == gateway.loop_thread for t in gateway.instructions.threads] == [
        False, False, False, True]


def test_a_model_backed_instruction_leaves_the_event_loop_to_other_requests(
        gateway: Gateway) -> None:
    """With an input check beside it, or another request in flight, the instruction step runs
    in a worker thread: the loop stays free for them."""
    def another_request() -> bool:  # while the first request's input check runs
        ask(gateway, "default", "Should I call my neighbour?", stream=True)
        return True

    gateway.classifier.meet = another_request
    ask(gateway, "g-input", "Should I call my neighbour?", stream=False)
    assert gateway.classifier.met is True
    assert len(gateway.instructions.threads) == 2
    assert gateway.loop_thread not in gateway.instructions.threads


def test_a_step_runs_off_the_loop_while_a_judge_batch_is_still_running(
        gateway: Gateway) -> None:
    """A check that timed out leaves its batch running in the judge's thread; a lone request's
    step run in place could wait on that batch's reading (the second look) and hold the whole
    event loop, health checks included, until it ended."""
    prompt = "Should I call my neighbour?"
    ask(gateway, "default", prompt, stream=False)  # makes the policy's batcher; in place
    batchers = list(gateway.guard._batchers.values())
    assert batchers and all(b.idle for b in batchers)
    batchers[0]._running_chars = 1000  # as a timed-out check's batch, still being scored
    try:
        ask(gateway, "default", prompt, stream=False)
    finally:
        batchers[0]._running_chars = 0
    ask(gateway, "default", prompt, stream=False)
    assert [t == gateway.loop_thread for t in gateway.instructions.threads] == [
        True, False, True]


def test_a_step_runs_off_the_loop_while_a_timed_out_step_still_runs_in_its_thread(
        gateway: Gateway) -> None:
    """A request whose instruction step timed out is answered, but its worker thread goes on;
    the next lone request's step run in place could wait on what that thread holds and hold
    the whole event loop until it ended."""
    prompt = "Should I call my neighbour?"
    gateway.guard._steps_in_threads = 1  # as a timed-out request's step, still running
    try:
        ask(gateway, "default", prompt, stream=False)
    finally:
        gateway.guard._steps_in_threads = 0
    ask(gateway, "default", prompt, stream=False)
    assert [t == gateway.loop_thread for t in gateway.instructions.threads] == [False, True]
