"""The instruction step's two lanes: short turns on threads of their own, long turns on a
bounded lane that sheds its excess at admission.

Review of fx-step: on one executor of four threads, eight concurrent long prompts (each step
about 1 s on 2 cores, mostly the judge's second look over ``INSTRUCTION_READ_CHARS``) queued
every ordinary request's step behind them; those timed out in the queue (503 after 5.8 s), and
under ``on_error: open`` a short harmful prompt sent beside the same client's padded ones went
out with no instruction. Now:

- a turn of at most ``SHORT_TURN_CHARS`` (as the step reads it) runs on the short lane
  (``SHORT_THREADS``, its steps 0.03-0.06 s): long turns never queue ahead of it;
- the long lane holds at most ``LONG_LANE_DEPTH`` steps, queued or running (a timed-out step
  still running in its thread included); one more is refused at once (``LaneFull``) instead
  of queueing until its request times out;
- a step whose request timed out (or whose client left) before a thread began it never runs
  (``NotStarted``): its thread begins it only if the caller has not given up, decided under
  one lock (a thread that took it as its caller gave up ran it after all, and the caller,
  finding no start, took it for a step that ran out by itself: a plain ``TimeoutError``);
- a step that started late (``StartedLate``), or started in time but ran out while other
  steps ran beside it in either lane (``SlowedByLoad``: a flood of long steps slows an ordinary
  turn's step on its idle short lane, 2 cores shared), ran out for the load.

These failures come from load, which a client can make: ``proxy.guard.Guard.failed`` fails them
closed whatever ``on_error`` (503 ``guard_unavailable`` with ``Retry-After``), so no turn goes
out without its instruction because of other requests' load. Only a step that ran out with no
other step running beside it fails as its policy's ``on_error`` says.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

SHORT_TURN_CHARS = 1_000
"""The longest turn (as the step reads it, ``proxy.guard.bounded_turn``) whose step runs on the
short lane. Ordinary chat turns are shorter (the review's: 97 characters); the step of one this
long reads one reader window and at most one judge window: tens of milliseconds."""

SHORT_THREADS = 2
"""The short lane's threads: one per core of the 2-core target. Its steps are short; ONNX runs
one intra-op thread per call in the gateway (``vilmo.judge.value_onnx.SERVING_THREADS``), so
the lanes' four threads run four model calls at most, not four times a pool."""

LONG_THREADS = 2
"""The long lane's threads: a long step is CPU-bound (0.4-0.6 s alone on 2 shared cores, about
1 s under load), so more threads do not finish more steps, they make each one slower
(``bench/bench_step_lanes.py``, 2 busy shared cores: four steps took 2.4-2.7 s in all on 1, 2
or 4 threads, each step 0.64 s on 1, 1.29 s on 2, 2.37 s on 4)."""

LONG_LANE_DEPTH = 32
"""The most long steps held at once, queued or running. Most long turns' steps are short (the
reader's window, tens of milliseconds); only those the judge's second look reads cost up to
about 1 s under load. A burst of ordinary long prompts (documents, code) must not be shed, so
the bound is the queue's size, not the time budget: a step that waits past its request's
timeout never runs (``NotStarted``), and short turns have their own lane whatever this holds."""


class LaneFull(RuntimeError):
    """The long lane holds ``LONG_LANE_DEPTH`` steps: this one is refused at admission."""


class NotStarted(TimeoutError):
    """The step's request timed out before a thread began the step: it never runs."""


class StartedLate(TimeoutError):
    """The step waited in the queue over ``LATE_START_SHARE`` of its time, then ran out of
    the rest: the queue, not its own turn, made it time out."""


LATE_START_SHARE = 0.25
"""A step that waited longer than this share of its timeout before a thread took it, and then
timed out, failed for the load (review of fx-step2: a flood of long steps made another turn
start just before its deadline; its plain ``TimeoutError`` failed open under ``on_error:
open`` and the turn went out without its instruction). A step that started in time and ran
out alone (``SlowedByLoad`` otherwise) still fails as its policy says."""


class SlowedByLoad(TimeoutError):
    """The step started in time, then ran out of its time while other steps ran beside it
    (in either lane): they shared the cores with it, so their load, which a client can make,
    may have made it slow (``bench/lane_slowed_steps.py``: a short step of 0.27 s alone, with
    0.6 s to run, failed open beside a flood of long steps)."""


LOAD_FAILURES = (LaneFull, NotStarted, StartedLate, SlowedByLoad)
"""Failures of a step caused by other steps' load, not by its own turn."""


_lock = threading.Lock()
"""Guards every lane's counts and each step's start (``_Step``)."""
_running = 0
"""Steps running now, in every lane (a timed-out one still running included)."""
_starts = 0
"""Steps begun so far, in every lane: a step that ran beside one begun after it sees it here."""


@dataclass(slots=True)
class _Step:
    """One step's start, decided once under ``_lock``: begun by its thread, or given up by its
    caller, whichever comes first."""

    submitted: float
    started: float | None = None
    others_running: int = 0
    """Steps running in any lane when it began."""
    starts_before: int = 0
    """``_starts`` when it began, itself included."""
    given_up: bool = False

    def ran_beside_others(self) -> bool:
        """Whether another step ran while this one did (it is still running)."""
        with _lock:
            return self.others_running > 0 or _starts > self.starts_before


class Lane:
    """A thread pool for steps, with an optional bound on the steps it holds."""

    def __init__(self, name: str, threads: int, depth: int | None) -> None:
        self.name = name
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"vilmo-step-{name}")
        self.depth = depth
        self.held = 0
        """Steps queued or running (a timed-out one still running included)."""

    def _admit(self) -> None:
        with _lock:
            if self.depth is not None and self.held >= self.depth:
                raise LaneFull(f"the {self.name} lane of the instruction step holds "
                               f"{self.held} steps, its most")
            self.held += 1

    def _release(self, *_: object) -> None:
        with _lock:
            self.held -= 1

    async def run(self, timeout: float, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in one of the lane's threads with the caller's context, within
        ``timeout`` seconds (queueing included): ``LaneFull`` when the lane is full,
        ``NotStarted`` when the time ran out before a thread began it (it never runs),
        ``StartedLate`` when it ran out after waiting over ``LATE_START_SHARE`` of it in the
        queue, ``SlowedByLoad`` when it ran out while another step ran beside it,
        ``TimeoutError`` when it ran out running alone (the work goes on in its thread, and
        holds its place in the lane until it ends). A caller cancelled (its client left)
        before a thread began the work: it never runs."""
        self._admit()
        step = _Step(time.monotonic())

        def begun(*work_args: Any) -> T:
            global _running, _starts
            with _lock:
                if step.given_up:
                    raise NotStarted("the step's caller gave up before it began")
                step.started, step.others_running = time.monotonic(), _running
                _running += 1
                _starts += 1
                step.starts_before = _starts
            try:
                return work(*work_args)
            finally:
                with _lock:
                    _running -= 1

        try:
            job = self.executor.submit(functools.partial(contextvars.copy_context().run,
                                                         begun, *args))
        except BaseException:
            self._release()
            raise
        job.add_done_callback(self._release)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it drops a cancel that lands
                return await asyncio.wrap_future(job)  # as the job ends (3.11)
        except (TimeoutError, asyncio.CancelledError) as exc:
            job.cancel()  # still queued: dropped at once, its place freed
            with _lock:
                step.given_up = True  # taken by a thread but not begun: never begun
                started = step.started
            if started is None:
                if isinstance(exc, TimeoutError):
                    raise NotStarted(f"the step waited {timeout:g} s in the {self.name} "
                                     "lane's queue and never started") from None
                raise
            if isinstance(exc, TimeoutError):
                waited = started - step.submitted
                if waited > LATE_START_SHARE * timeout:
                    raise StartedLate(f"the step waited {waited:.2f} s of its {timeout:g} s "
                                      f"in the {self.name} lane's queue, then ran out") from None
                if step.ran_beside_others():
                    raise SlowedByLoad(f"the step ran out of its {timeout:g} s in the "
                                       f"{self.name} lane while other steps ran beside it"
                                       ) from None
            raise


short_lane = Lane("short", SHORT_THREADS, None)
"""Steps of turns of at most ``SHORT_TURN_CHARS``. Unbounded: each request has one step, and
a step that waits past its timeout never runs (``NotStarted``)."""

long_lane = Lane("long", LONG_THREADS, LONG_LANE_DEPTH)
"""Steps of longer turns, at most ``LONG_LANE_DEPTH`` at once."""


def lane_for(turn_chars: int) -> Lane:
    """The lane of a step that reads a turn of ``turn_chars`` characters."""
    return short_lane if turn_chars <= SHORT_TURN_CHARS else long_lane
