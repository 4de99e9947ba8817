"""A caller cancelled just as its step's thread finished still ends cancelled: ``Lane.run``
must not hand back the finished result and drop the cancel (3.11's ``asyncio.wait_for`` did,
so a client who left was served and billed; the review's t6 script)."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy import step_lanes


def test_a_cancel_that_lands_as_the_step_ends_is_kept() -> None:
    lane = step_lanes.Lane("short", 1, None)

    async def main() -> None:
        task = asyncio.create_task(lane.run(5.0, lambda: "result"))
        await asyncio.sleep(0)  # the task submits the step and awaits it
        time.sleep(0.3)  # noqa: ASYNC251 (held on purpose while the thread ends the step)
        task.cancel()  # the cancel lands in the same turn as the step's result
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    finally:
        lane.executor.shutdown(wait=True)
