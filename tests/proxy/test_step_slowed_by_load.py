"""A step that ran out of its time is ``SlowedByLoad`` (fails closed) on evidence of CPU
contention on its own thread, not because anything else ran (review mr3, items 1 and 2).

Before, any other lane step counted: a 10 ms step beside it, or the same client's previous
timed-out step still running in its thread, turned an ``on_error: open`` step that was slow by
itself (its own I/O: a slow cache store) into a 503; and load outside the lanes (the judge
batcher's threads, other worker processes) was not seen at all, so a step it slowed failed
open. Now the step's thread's run-queue wait decides (``step_lanes.slowed_by_load``). The
thread's times are injected (``step_lanes.read_thread_times``: a fixed run-queue share of the
wall clock), and the steps block on events, so nothing here depends on the machine's load.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from proxy import step_lanes
from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import FAILED_INSTRUCTION
from vilmo.instruct.instructions import Instruction
from vilmo.policy import Policy
from vilmo.types import Messages

TIMEOUT_S = 1.0  # a step starts within LATE_START_SHARE of it, however busy the machine


def reader_with_share(share: float) -> Callable[[int, int], step_lanes.ThreadTimes]:
    """Thread times whose run-queue wait is ``share`` of the wall clock, for every thread."""
    def read(native_id: int, ident: int) -> step_lanes.ThreadTimes:
        wall = time.monotonic()
        return step_lanes.ThreadTimes(wall, on_cpu=(1 - share) * wall, run_queue=share * wall)
    return read


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def outcomes(lane: step_lanes.Lane, release: threading.Event, beside: str) -> BaseException:
    """Step A blocks (slow by itself) and runs out; ``beside``: ``"short"``, a 10 ms step that
    begins while A runs; ``"previous"``, an earlier step of the same client that timed out and
    still runs in its thread; ``"none"``."""
    began = threading.Event()

    def slow_alone() -> str:
        began.set()
        release.wait(10)
        return "instruction"

    async def main() -> BaseException:
        if beside == "previous":
            with pytest.raises(TimeoutError):
                await lane.run(0.05, release.wait, 10)  # still running in its thread
        step = asyncio.ensure_future(lane.run(TIMEOUT_S, slow_alone))
        while not began.is_set():
            await asyncio.sleep(0.005)
        if beside == "short":
            await lane.run(TIMEOUT_S, time.sleep, 0.01)
        try:
            await step
        except TimeoutError as exc:
            return exc
        raise AssertionError("the step did not run out")

    try:
        return asyncio.run(main())
    finally:
        release.set()


@pytest.mark.parametrize("beside", ["short", "previous", "none"])
def test_a_step_slow_by_itself_is_a_plain_timeout_whatever_ran_beside_it(
        monkeypatch: pytest.MonkeyPatch, release: threading.Event, beside: str) -> None:
    monkeypatch.setattr(step_lanes, "read_thread_times", reader_with_share(0.0), raising=False)
    lane = step_lanes.Lane("short", 2, None)
    try:
        error = outcomes(lane, release, beside)
    finally:
        lane.executor.shutdown(wait=True)
    assert not isinstance(error, step_lanes.LOAD_FAILURES), repr(error)


def test_a_step_whose_thread_waited_for_a_cpu_is_slowed_by_load(
        monkeypatch: pytest.MonkeyPatch, release: threading.Event) -> None:
    """No other lane step ran: the load was the batcher's threads or another worker's."""
    monkeypatch.setattr(step_lanes, "read_thread_times",
                        reader_with_share(getattr(step_lanes, "OFF_CPU_SHARE", 0.25) + 0.05),
                        raising=False)
    lane = step_lanes.Lane("short", 2, None)
    try:
        error = outcomes(lane, release, "none")
    finally:
        lane.executor.shutdown(wait=True)
    assert isinstance(error, step_lanes.SlowedByLoad), repr(error)


def test_the_rule_on_each_platform() -> None:
    """Off its CPU (waiting for a core, the GIL, a lock or its own I/O) for at least the share:
    closed; queued over ``QUEUED_SHARE`` of its timeout: closed; where its CPU time is not told
    (or never moves, as schedstat's zeros), whether another step ran beside it."""
    share, slowed_by_load = step_lanes.OFF_CPU_SHARE, step_lanes.slowed_by_load
    ThreadTimes = step_lanes.ThreadTimes
    begun = ThreadTimes(10.0, 1.0, 1.0)
    assert slowed_by_load(begun, ThreadTimes(11.0, 1.1, 1.0 + share), False)
    assert not slowed_by_load(begun, ThreadTimes(11.0, 1.0 + (1 - share) + 0.01, 1.0), True)
    assert slowed_by_load(begun, ThreadTimes(11.0, 1.1, 1.0), False)  # GIL, lock or I/O
    cpu_only = ThreadTimes(10.0, 1.0)
    assert not slowed_by_load(cpu_only, ThreadTimes(11.0, 1.0 + (1 - share) + 0.01), True)
    assert slowed_by_load(cpu_only, ThreadTimes(11.0, 1.0 + (1 - share) - 0.01), False)
    assert slowed_by_load(ThreadTimes(10.0), ThreadTimes(11.0), True)
    assert not slowed_by_load(ThreadTimes(10.0), ThreadTimes(11.0), False)
    zeros = ThreadTimes(10.0, 0.0, 0.0)  # a kernel without scheduler stats (review mr6)
    assert slowed_by_load(zeros, ThreadTimes(11.0, 0.0, 0.0), True)
    assert not slowed_by_load(zeros, ThreadTimes(11.0, 0.0, 0.0), False)


def test_a_step_that_queued_then_ran_out_on_its_cpu_is_slowed_by_load() -> None:
    """review mr6: 0.2 s of a 1 s timeout queued behind a flood of short prompts, then 0.8 s
    on its CPU: the queue made it late; it failed open (a plain TimeoutError) before."""
    ThreadTimes = step_lanes.ThreadTimes
    on_cpu = (ThreadTimes(10.0, 1.0), ThreadTimes(10.8, 1.8))
    assert step_lanes.slowed_by_load(*on_cpu, False, queued=0.2, timeout=1.0)
    assert not step_lanes.slowed_by_load(*on_cpu, False, queued=0.01, timeout=1.0)


def test_this_threads_times_are_read() -> None:
    """On Linux with a readable /proc, schedstat's clocks; elsewhere at least the CPU time."""
    times = step_lanes.thread_times(threading.get_native_id(), threading.get_ident())
    assert times.on_cpu is not None and times.on_cpu > 0
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat"):
            pass
    except OSError:
        return
    assert times.run_queue is not None and times.run_queue >= 0


class SlowSteps:
    """A turn's step that waits for ``release`` (its own I/O); ``quick`` turns answer at once."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        if "quick" not in str(messages[-1]["content"]):
            self.release.wait(10)
        return Instruction("Be kind.", ("care-1",), "fake", ("mft.care",))


POLICY = Policy.model_validate({
    "name": "p", "values": {"mft.care": {}}, "on_error": "open",
    "instructions": {"generator": "relevance"},
    "checks": {"input": False, "timeout_s": TIMEOUT_S, "fail_open_max_chars": 8000}})


def load_failures(guard: Guard) -> float:
    text = guard.metrics.exposition().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('vilmo_guard_load_failures_total{stage="instruction"}'))


@pytest.mark.parametrize(("share", "fails_closed"), [(0.0, False), (0.5, True)])
def test_the_guard_fails_open_for_a_slow_step_and_closed_for_a_slowed_one(
        monkeypatch: pytest.MonkeyPatch, release: threading.Event, share: float,
        fails_closed: bool) -> None:
    """End to end through ``Guard.instruction`` (``on_error: open``), a quick step of another
    request beside it; the load failure is counted apart from other guard errors."""
    monkeypatch.setattr(step_lanes, "read_thread_times", reader_with_share(share),
                        raising=False)
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    guard.requests_in_flight = 2  # others in flight: no step runs in place
    steps = SlowSteps(release)

    async def main() -> tuple[object, object]:
        slow = asyncio.ensure_future(
            guard.instruction(steps, [{"role": "user", "content": "hello"}], POLICY))
        await asyncio.sleep(0.2)
        quick, _ = await guard.instruction(steps, [{"role": "user", "content": "quick"}],
                                           POLICY)
        try:
            return (await slow)[0], quick
        except GuardFailed as exc:
            return exc, quick

    outcome, quick = asyncio.run(main())
    release.set()
    assert quick is not FAILED_INSTRUCTION
    if fails_closed:
        assert isinstance(outcome, GuardFailed) and outcome.code == "guard_unavailable"
        assert outcome.headers == {"Retry-After": "1"}
    else:
        assert outcome is FAILED_INSTRUCTION
    assert load_failures(guard) == (1.0 if fails_closed else 0.0)
    assert guard.metrics.guard_errors.labels("instruction")._value.get() == 1.0
