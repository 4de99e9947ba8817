"""The instruction step's lanes (``proxy.step_lanes``) under load a client makes.

- A step that starts at once on its own idle lane, but is slowed by other steps' load (a
  flood of long prompts on the long lane) and runs out of its time, failed for their load: it
  raised a plain ``TimeoutError`` and under ``on_error: open`` the turn went out without its
  instruction (``bench/lane_slowed_steps.py`` shows it with real CPU-bound steps). Now it is
  ``SlowedByLoad`` (its thread waited for a CPU: ``step_lanes.slowed_by_load``), a load
  failure: 503 with ``Retry-After``, whatever ``on_error``.
- A thread that took a step just as its caller gave up (timed out, or cancelled: the client
  left) ran it after all, and the caller, finding no start time, took it for a step that ran
  out by itself (a plain ``TimeoutError``: open). Now a step starts only if its caller has not
  given up, and one that did not start is ``NotStarted`` and never runs.

The steps here block on events; timeouts are a few tenths of a second.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import pytest
from fakes import on_its_cpu_all_along

from proxy import step_lanes
from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import FAILED_INSTRUCTION
from vilmo.instruct.instructions import Instruction, prompt_text
from vilmo.policy import Policy
from vilmo.types import Messages

LONG_TURN = "Tell me about my garden. " * 100  # 2,500 characters: the long lane


class SlowInstructions:
    """Long turns' steps (the flood) wait for ``release``; a turn with ``SLOW`` waits for
    ``slow_release`` (a step that runs past its timeout); others answer at once."""

    def __init__(self) -> None:
        self.release, self.slow_release = threading.Event(), threading.Event()

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        text = prompt_text(messages)
        if len(text) > step_lanes.SHORT_TURN_CHARS:
            self.release.wait(30)
        elif "SLOW" in text:
            self.slow_release.wait(30)
        return Instruction("Be kind.", ("care-1",), "fake", ("mft.care",))


def open_policy(timeout_s: float) -> Policy:
    return Policy.model_validate({
        "name": "p", "values": {"mft.care": {}}, "on_error": "open",
        "instructions": {"generator": "relevance"},
        "checks": {"input": False, "timeout_s": timeout_s, "fail_open_max_chars": 500}})


def busy_guard() -> Guard:
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    guard.requests_in_flight = 2  # others in flight: no step runs in place
    return guard


def turn(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def drained() -> None:
    deadline = time.monotonic() + 10
    while (step_lanes.short_lane.held or step_lanes.long_lane.held) and \
            time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def generator() -> Iterator[SlowInstructions]:
    slow = SlowInstructions()
    yield slow
    slow.release.set()
    slow.slow_release.set()
    drained()


def test_a_step_slowed_beside_a_flood_of_long_steps_fails_closed(
        generator: SlowInstructions, monkeypatch: pytest.MonkeyPatch) -> None:
    """The short turn's step starts at once on the idle short lane and runs out while the
    flood's steps run on the long lane, its thread waiting for a CPU half of its time (the
    flood's CPU load, as its thread's scheduler stats would show it: review mr3, a step slow
    by itself beside others is no longer a load failure): 503 with Retry-After, not sent
    without its instruction."""
    def half_on_the_run_queue(native_id: int, ident: int) -> step_lanes.ThreadTimes:
        wall = time.monotonic()
        return step_lanes.ThreadTimes(wall, on_cpu=wall / 2, run_queue=wall / 2)

    monkeypatch.setattr(step_lanes, "read_thread_times", half_on_the_run_queue)
    guard, policy = busy_guard(), open_policy(timeout_s=0.3)

    async def main() -> object:
        flood = [asyncio.ensure_future(guard.instruction(generator, turn(f"{i} {LONG_TURN}"),
                                                         policy)) for i in range(4)]
        await asyncio.sleep(0.05)  # the long steps hold the long lane's threads
        try:
            result: object = (await guard.instruction(
                generator, turn("SLOW: how do I poison my neighbour's dog?"), policy))[0]
        except GuardFailed as exc:
            result = exc
        generator.release.set()
        generator.slow_release.set()
        await asyncio.gather(*flood, return_exceptions=True)
        return result

    result = asyncio.run(main())
    assert result is not FAILED_INSTRUCTION, "sent without its instruction for others' load"
    assert isinstance(result, GuardFailed), result
    assert result.code == "guard_unavailable" and result.headers == {"Retry-After": "1"}


def test_a_step_that_runs_out_alone_still_fails_as_its_policy_says(
        generator: SlowInstructions, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its thread ran on its CPU all along (its own long work, stood for by an event and
    ``on_its_cpu_all_along``): its own turn made it slow, and ``on_error: open`` holds (the
    turn goes out marked ``x-vilmo-guard: error``)."""
    monkeypatch.setattr(step_lanes, "read_thread_times", on_its_cpu_all_along)
    guard, policy = busy_guard(), open_policy(timeout_s=0.2)
    drained()

    async def main() -> object:
        return (await guard.instruction(generator, turn("SLOW: a question"), policy))[0]

    assert asyncio.run(main()) is FAILED_INSTRUCTION


class GatedExecutor(Executor):
    """One thread that takes each step (its future is running: it can no longer be
    cancelled), then waits for ``gate`` before it calls it: the moment between
    ``Future.set_running_or_notify_cancel`` and the step's first line, stretched."""

    def __init__(self, gate: threading.Event, taken: threading.Event) -> None:
        self.gate, self.taken = gate, taken
        self.threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()

        def take() -> None:
            if not future.set_running_or_notify_cancel():
                return
            self.taken.set()
            self.gate.wait(10)
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - the step's own error, to its future
                future.set_exception(exc)

        thread = threading.Thread(target=take)
        self.threads.append(thread)
        thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for thread in self.threads:
            thread.join(10)


@pytest.mark.parametrize("give_up", ["timeout", "cancel"])
def test_a_step_taken_as_its_caller_gives_up_never_runs(give_up: str) -> None:
    lane = step_lanes.Lane("short", 1, None)
    gate, taken = threading.Event(), threading.Event()
    lane.executor = GatedExecutor(gate, taken)  # type: ignore[assignment]
    ran: list[str] = []

    async def main() -> BaseException | None:
        task = asyncio.ensure_future(lane.run(0.2 if give_up == "timeout" else 5.0,
                                              ran.append, "ran"))
        while not taken.is_set():
            await asyncio.sleep(0.01)
        if give_up == "cancel":
            task.cancel()  # the client left
        try:
            await task
        except BaseException as exc:  # noqa: BLE001 - what the caller got
            return exc
        return None

    try:
        error = asyncio.run(main())
    finally:
        gate.set()
        lane.executor.shutdown(wait=True)
    assert ran == [], "the step ran after its caller gave up"
    assert lane.held == 0
    if give_up == "timeout":
        assert isinstance(error, step_lanes.NotStarted), repr(error)
    else:
        assert isinstance(error, asyncio.CancelledError), repr(error)
