"""Does a flood of long prompts make an ordinary turn's instruction step fail open
(``proxy.step_lanes.SlowedByLoad``)?

A short turn's step (CPU-bound pure Python, about 0.2-0.3 s alone on a shared core) runs on
its idle short lane under ``on_error: open`` with a 0.6 s timeout, alone and then beside
eight long steps (3 s of CPU each) on the long lane. Prints each outcome (instruction, failed
open: sent without it, or 503 closed) and its time as a ratio to the mean alone, measured in
the same run. Before ``SlowedByLoad``, a step slowed past its timeout beside the flood failed
open (2 of 3 runs: 0.62 s and 0.63 s, alone 0.24-0.30 s); now it is a 503 with Retry-After.

    PYTHONPATH=. python bench/lane_slowed_steps.py
"""

from __future__ import annotations

import asyncio
import time

from proxy import step_lanes
from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.outcome import FAILED_INSTRUCTION
from vilmo.instruct.instructions import Instruction, prompt_text
from vilmo.policy import Policy
from vilmo.types import Messages

SHORT_WORK, LONG_WORK = 0.4, 3.0
"""Scales of the steps' loops (about 0.6 s of CPU a unit on the 2-core target, alone)."""
ROUNDS = 3


def burn(scale: float) -> int:
    total = 0
    for i in range(int(scale * 8_000_000)):
        total += i
    return total


class CpuSteps:
    """A step that costs CPU by its turn's length: long turns ``LONG_WORK``, short ones
    ``SHORT_WORK``."""

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        burn(LONG_WORK if len(prompt_text(messages)) > step_lanes.SHORT_TURN_CHARS
             else SHORT_WORK)
        return Instruction("Be kind.", ("care-1",), "fake", ("mft.care",))


POLICY = Policy.model_validate({
    "name": "p", "values": {"mft.care": {}}, "on_error": "open",
    "instructions": {"generator": "relevance"},
    "checks": {"input": False, "timeout_s": 0.6, "fail_open_max_chars": 8000}})


def turn(text: str) -> Messages:
    return [{"role": "user", "content": text}]


async def ordinary(guard: Guard, steps: CpuSteps) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        instruction, _ = await guard.instruction(steps, turn("How do I poison his dog?"),
                                                 POLICY)
        outcome = "failed open" if instruction is FAILED_INSTRUCTION else "instruction"
    except GuardFailed as exc:
        outcome = f"503 closed ({exc.headers})"
    return outcome, time.perf_counter() - started


async def main() -> None:
    guard = Guard(lambda p: None, Metrics(["stub"]))  # type: ignore[arg-type,return-value]
    guard.requests_in_flight = 2  # others in flight: no step runs in place
    steps = CpuSteps()
    alone = [await ordinary(guard, steps) for _ in range(ROUNDS)]
    base = sum(seconds for _, seconds in alone) / len(alone)
    flood = [asyncio.ensure_future(guard.instruction(steps, turn(f"{i} " + "pad " * 400),
                                                     POLICY)) for i in range(8)]
    await asyncio.sleep(0.1)
    beside = [await ordinary(guard, steps) for _ in range(ROUNDS)]
    await asyncio.gather(*flood, return_exceptions=True)
    while step_lanes.long_lane.held or step_lanes.short_lane.held:
        await asyncio.sleep(0.05)
    for name, runs in (("alone", alone), ("beside the flood", beside)):
        for outcome, seconds in runs:
            print(f"{name:17s} {outcome:32s} {seconds:.2f} s ({seconds / base:.2f}x alone)")


if __name__ == "__main__":
    asyncio.run(main())
