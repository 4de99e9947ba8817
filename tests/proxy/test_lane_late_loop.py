"""A step that finished inside its time while the event loop was held (blocked in C, or busy
with pure-Python work) is not thrown away when the loop comes back after the deadline: its
result is used (review mr7: it was a plain ``TimeoutError``, and under ``on_error: open`` the
turn went out without its instruction)."""

from __future__ import annotations

import asyncio
import time

from proxy import step_lanes


def _instruction_after(seconds: float) -> str:
    time.sleep(seconds)
    return "instruction"


def test_a_step_done_in_time_is_kept_when_the_loop_comes_back_late() -> None:
    lane = step_lanes.Lane("short", 1, None)

    async def main() -> str:
        step = asyncio.ensure_future(lane.run(0.3, _instruction_after, 0.1))
        await asyncio.sleep(0.01)  # the step is submitted; done in its thread at 0.1 s
        time.sleep(0.5)  # noqa: ASYNC251 (the loop held past the step's deadline on purpose)
        return await step

    try:
        assert asyncio.run(main()) == "instruction"
    finally:
        lane.executor.shutdown(wait=True)
