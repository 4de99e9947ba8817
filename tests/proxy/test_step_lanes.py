"""Other requests' load never costs a turn its instruction (review of fx-step, HIGH).

On one executor of four threads, eight concurrent long prompts queued every ordinary request's
step behind them: those timed out in the queue (503 after 5.8 s), and under ``on_error: open``
a short harmful prompt, sent beside the same client's padded ones, went out without its
instruction (``x-vilmo-guard: error``), whatever ``checks.fail_open_max_chars``. Now short turns
have a lane of their own (``proxy.step_lanes``), the long lane sheds its excess at admission,
and a step refused or never started for the load fails closed (503 with ``Retry-After``).
The steps here block on an event (a saturated lane) with timeouts of a few tenths of a second.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import FakeUpstream, MemoryAudit, fake_services, on_its_cpu_all_along, post_chat

from proxy import step_lanes
from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import FAILED_INSTRUCTION
from vilmo.instruct.instructions import Instruction, prompt_text
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy import Policy
from vilmo.types import Messages

LONG_TURN = "Tell me about my garden. " * 100  # 2,500 characters: the long lane
FLOOD = 8  # more than the old executor's four threads


class BlockingInstructions:
    """Steps of turns containing ``BLOCK`` (or long ones) wait for ``release``; the others
    answer at once. Records the turns whose step ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran: list[str] = []

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        text = prompt_text(messages)
        self.ran.append(text[:20])
        if "BLOCK" in text or len(text) > 1_000:
            self.release.wait(30)
        return Instruction("Be kind.", ("care-1",), "fake", ("mft.care",))


def policy(on_error: str, timeout_s: float, fail_open_max_chars: int = 500) -> Policy:
    return Policy.model_validate({
        "name": "p", "values": {"mft.care": {}}, "on_error": on_error,
        "instructions": {"generator": "relevance"},
        "checks": {"input": False, "timeout_s": timeout_s,
                   "fail_open_max_chars": fail_open_max_chars}})


def busy_guard() -> Guard:
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    guard.requests_in_flight = 2  # others in flight: no step runs in place
    return guard


@pytest.fixture
def generator() -> Iterator[BlockingInstructions]:
    """The generator; its blocked steps are released, and the lanes drained, after the test
    (the lanes are the process's)."""
    blocking = BlockingInstructions()
    yield blocking
    blocking.release.set()
    deadline = time.monotonic() + 10
    while (step_lanes.short_lane.held or step_lanes.long_lane.held) and \
            time.monotonic() < deadline:
        time.sleep(0.01)


def turn(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def test_short_turns_keep_their_instruction_while_long_ones_flood(
        generator: BlockingInstructions) -> None:
    guard, open_policy = busy_guard(), policy("open", timeout_s=0.5)

    async def main() -> tuple[list[object], list[Instruction]]:
        flood = [asyncio.ensure_future(guard.instruction(generator, turn(f"{i} {LONG_TURN}"),
                                                         open_policy)) for i in range(FLOOD)]
        await asyncio.sleep(0.05)  # the long steps hold their threads
        ordinary = await asyncio.gather(*(
            guard.instruction(generator, turn(f"Should I call my neighbour? #{j}"), open_policy)
            for j in range(3)))
        return (list(await asyncio.gather(*flood, return_exceptions=True)),
                [instruction for instruction, _ in ordinary])

    flooded, ordinary = asyncio.run(main())
    assert [i.principle_ids for i in ordinary] == [("care-1",)] * 3
    # The long ones fail closed (over fail_open_max_chars, or refused at admission).
    assert all(isinstance(f, GuardFailed) for f in flooded), flooded


def test_a_short_turn_queued_past_its_timeout_fails_closed_under_on_error_open(
        generator: BlockingInstructions) -> None:
    """Short steps flood every thread: a short harmful turn waits in the queue until its
    request times out. It never ran: 503 with Retry-After, not sent without its instruction."""
    guard, open_policy = busy_guard(), policy("open", timeout_s=0.3)

    async def main() -> tuple[Instruction | BaseException, float]:
        flood = [asyncio.ensure_future(guard.instruction(generator, turn(f"BLOCK {i}"),
                                                         open_policy)) for i in range(FLOOD)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        try:
            result: Instruction | BaseException = (await guard.instruction(
                generator, turn("How do I poison my neighbour's dog?"), open_policy))[0]
        except GuardFailed as exc:
            result = exc
        await asyncio.gather(*flood, return_exceptions=True)
        return result, time.perf_counter() - started

    result, _ = asyncio.run(main())
    assert result is not FAILED_INSTRUCTION, "sent without its instruction for others' load"
    assert isinstance(result, GuardFailed), result
    assert result.code == "guard_unavailable" and result.headers == {"Retry-After": "1"}
    assert "never started" in result.message
    assert not any(ran.startswith("How do I poison") for ran in generator.ran)


def test_the_long_lane_sheds_its_excess_at_once(generator: BlockingInstructions) -> None:
    """A long step past the lane's depth is refused at admission (503 with Retry-After, even
    under ``on_error: open`` for a turn under ``checks.fail_open_max_chars``), not after
    queueing for the check timeout."""
    guard = busy_guard()
    open_policy = policy("open", timeout_s=5.0, fail_open_max_chars=8_000)

    async def main() -> tuple[BaseException | None, float]:
        held = [asyncio.ensure_future(guard.instruction(generator, turn(f"{i} {LONG_TURN}"),
                                                        open_policy))
                for i in range(step_lanes.LONG_LANE_DEPTH)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        refused: BaseException | None = None
        try:
            await guard.instruction(generator, turn(f"more {LONG_TURN}"), open_policy)
        except GuardFailed as exc:
            refused = exc
        seconds = time.perf_counter() - started
        generator.release.set()
        await asyncio.gather(*held)
        return refused, seconds

    refused, seconds = asyncio.run(main())
    assert isinstance(refused, GuardFailed), refused
    assert refused.headers == {"Retry-After": "1"} and "lane" in refused.message
    assert seconds < 1.0


class SlowFailingInstructions:
    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        time.sleep(0.2)
        raise RuntimeError("the step failed")


def test_a_step_that_fails_closed_records_its_time_and_guard_error(
        policies_dir: Path, bank: PrincipleBank) -> None:
    upstream = FakeUpstream()
    services = fake_services(policies_dir, bank, upstream)
    services.instructions = SlowFailingInstructions()
    audit = MemoryAudit()
    services.audit = audit

    async def main() -> httpx.Response:
        try:
            response: httpx.Response = await post_chat(services, {
                "model": "stub", "messages": [{"role": "user", "content": "Hi " * 400}]},
                {"X-Vilmo-Policy": "open"})
            return response
        finally:
            await services.guard.aclose()

    response = asyncio.run(main())
    assert response.status_code == 503, response.text
    [record] = audit.records
    assert record.error_code == "guard_unavailable"
    assert record.instruction_s >= 0.2, record.instruction_s
    assert record.guard == "error"


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    (tmp_path / "default.yaml").write_text(
        "name: default\nvalues:\n  mft.care: {action: annotate}\n")
    (tmp_path / "open.yaml").write_text(
        "name: open\nvalues:\n  mft.care: {action: annotate}\n"
        "checks: {input: false, output: true, fail_open_max_chars: 500}\non_error: open\n")
    return tmp_path


def test_a_step_that_started_late_and_ran_out_fails_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review of fx-step2: a step queued behind the flood that a thread took just before its
    deadline raised a plain ``TimeoutError`` and failed open (no instruction sent); a step that
    waited over ``LATE_START_SHARE`` of its time is ``StartedLate``, a load failure, closed.
    One that started at once and ran out by itself (on its CPU) still fails open, as its
    policy says."""
    monkeypatch.setattr(step_lanes, "read_thread_times", on_its_cpu_all_along)
    lane = step_lanes.Lane("long", 1, None)
    late_release, alone_release = threading.Event(), threading.Event()

    async def main() -> list[object]:
        ahead = asyncio.create_task(lane.run(5.0, time.sleep, 0.25))  # holds the one thread
        await asyncio.sleep(0.02)
        late = lane.run(0.4, late_release.wait, 5)  # starts after ~0.23 s of its 0.4 s
        done = await asyncio.gather(late, return_exceptions=True)
        await ahead
        late_release.set()  # its thread free again
        await asyncio.sleep(0.05)
        alone = await asyncio.gather(lane.run(0.2, alone_release.wait, 5),
                                     return_exceptions=True)
        return [*done, *alone]

    try:
        late, alone = asyncio.run(main())
    finally:
        late_release.set()
        alone_release.set()
        lane.executor.shutdown(wait=True)
    assert isinstance(late, step_lanes.StartedLate)
    assert isinstance(alone, TimeoutError) and not isinstance(alone, step_lanes.LOAD_FAILURES)
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    with pytest.raises(GuardFailed):
        guard.failed(policy("open", 0.4), "instruction", late, size=30)
