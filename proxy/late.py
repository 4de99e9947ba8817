"""Work that outlives its response: a monitor stream the client left is judged, then recorded,
in a task of its own after the response has ended (``proxy.sse``).

``LateWork`` holds each such task until it is done, and the app's shutdown waits for them
(``drain``, bounded) before it closes the judge and the store: a judgement left running there
was cancelled by the event loop's end, so its record said "unjudged" and reached only an
orphan spool file, not the trail. A task that fails is logged once, here, and harms nothing
else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

DRAIN_S = 6.0
"""The longest the shutdown waits for late work: a late judgement is bounded by its policy's
``checks.timeout_s`` (default 5 s), so under the default it always ends within this; and the
shutdown stays well inside a container's usual stop timeout (docker's: 10 s, then SIGKILL,
which would lose the store's queued records too). Work still running then is cancelled, and a
cancelled judgement is still recorded (unjudged: failed open)."""
CANCEL_WAIT_S = 2.0
"""How long cancelled work has to record what it can."""


class LateWork:
    """The tasks of work that outlives its response, each kept until it is done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Runs ``work`` in a task of its own (``name`` says what it is, in the log)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        """Forgets a finished task; its failure, retrieved here, is logged once."""
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("%s failed: %s: %.200s", task.get_name(), type(error).__name__, error)
        log.debug("traceback of the failure of %s", task.get_name(), exc_info=error)

    async def drain(self, timeout_s: float = DRAIN_S) -> int:
        """Waits for the work under way (and any started meanwhile), at most ``timeout_s``;
        what is still running then is cancelled and given ``CANCEL_WAIT_S`` to end. Returns
        how many tasks were cancelled."""
        deadline = time.monotonic() + timeout_s
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        stuck = set(self._tasks)
        if not stuck:
            return 0
        log.warning("shutdown: %d late judgement(s) still running after %.1f s, cancelled "
                    "(recorded unjudged)", len(stuck), timeout_s)
        for task in stuck:
            task.cancel()
        await asyncio.wait(stuck, timeout=CANCEL_WAIT_S)
        return len(stuck)
