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
- a step that started late (``StartedLate``), or queued at all (over ``QUEUED_SHARE`` of its
  timeout) or ran out while its own thread was off a CPU for at least ``OFF_CPU_SHARE`` of
  its time (``SlowedByLoad``: a flood of long steps, the judge batcher's checks, pure-Python
  work of its own process or another worker process, 2 cores shared, slows an ordinary turn's
  step on its idle short lane), ran out for the load.

These failures come from load, which a client can make: ``proxy.guard.Guard.failed`` fails them
closed whatever ``on_error`` (503 ``guard_unavailable`` with ``Retry-After``), so no turn goes
out without its instruction because of other requests' load. Only a step that ran out on its
CPU (its own long work) fails as its policy's ``on_error`` says, whatever else ran beside it;
one slow on its own waits (a slow cache store) cannot be told from one kept off its CPU, and
fails closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
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
    """The step started in time, then ran out of its time after it queued, or while its thread
    was off a CPU for at least ``OFF_CPU_SHARE`` of it (``slowed_by_load``): whatever held the cores
    (other steps, the judge batcher's threads, other worker processes), that load, which a
    client can make, made it slow (``bench/lane_slowed_steps.py``: a short step of 0.27 s
    alone, with 0.6 s to run, failed open beside a flood of long steps)."""


OFF_CPU_SHARE = 0.25
"""A step that ran out of its time is ``SlowedByLoad`` when its thread was off a CPU for at
least this share of its time since it began: waiting for a core (other steps, the judge
batcher's threads, other worker processes: ``bench/step_run_queue_share.py`` reads the
run-queue part), for the GIL (pure-Python load of its own process, which no run queue shows:
review mr6, a step 4 times slower beside 3 pure-Python threads showed 0.04 of its time
queued), for a lock or the judge's batch, or for its own I/O (a slow cache store), which
cannot be told apart from the rest and fails closed too, the safe side. A CPU-bound thread
beside k - 1 others runnable on its core is off it (k - 1) / k of its time, so a quarter is
the evidence of a load that made it at least 4/3 as slow as alone. Only a step that ran out
on its CPU (its own long work) fails as its policy's ``on_error`` says."""

QUEUED_SHARE = 0.05
"""A step that waited in its lane's queue for more than this share of its timeout before a
thread began it, and then ran out, ran out for the load too (review mr6: 0.2 s of a 1 s
timeout queued behind a client's flood of short prompts, then 0.9 s of its own work: the
queue, not the turn, made it late)."""


LOAD_FAILURES = (LaneFull, NotStarted, StartedLate, SlowedByLoad)
"""Failures of a step caused by other steps' load, not by its own turn."""


@dataclass(frozen=True, slots=True)
class ThreadTimes:
    """A thread's clocks at one moment, in seconds: ``wall`` (monotonic), ``on_cpu`` and
    ``run_queue`` (runnable, waiting for a CPU) where the platform tells them."""

    wall: float
    on_cpu: float | None = None
    run_queue: float | None = None


def thread_times(native_id: int, ident: int) -> ThreadTimes:
    """The thread's times: its CPU time (``time.pthread_getcpuclockid``; else schedstat's), and
    the part of its time it waited for a CPU, where Linux's per-thread scheduler stats tell it
    (``/proc/self/task/<native id>/schedstat``: ns on a CPU, ns waiting on a run queue; one read
    costs 14 us on the dev machine, twice a step); else the wall clock alone."""
    wall = time.monotonic()
    on_cpu: float | None = None
    run_queue: float | None = None
    try:
        on_cpu = time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):
        pass
    try:
        stats = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)
        try:
            ran, waited = os.read(stats, 128).split()[:2]
        finally:
            os.close(stats)
        run_queue = int(waited) / 1e9
        on_cpu = int(ran) / 1e9 if on_cpu is None else on_cpu
    except (OSError, ValueError):
        pass
    return ThreadTimes(wall, on_cpu, run_queue)


read_thread_times: Callable[[int, int], ThreadTimes] = thread_times
"""What a step's times are read with (``native_id``, ``ident``): tests set their own."""


def slowed_by_load(begun: ThreadTimes, now: ThreadTimes, ran_beside_others: bool,
                   queued: float = 0.0, timeout: float = 0.0) -> bool:
    """Whether a step that ran from ``begun`` to ``now`` (its thread's times), after ``queued``
    seconds in its lane's queue, ran out for the load: it queued over ``QUEUED_SHARE`` of its
    ``timeout``, or its thread was off a CPU for at least ``OFF_CPU_SHARE`` of its time. Where
    a thread's CPU time is not told (or a clock that never moves, as schedstat's zeros on a
    kernel without scheduler stats: review mr6), whether another step ran beside it
    (``ran_beside_others``, the rule before thread times were read) or it queued."""
    if queued > QUEUED_SHARE * timeout:
        return True
    wall = now.wall - begun.wall
    if begun.on_cpu is None or now.on_cpu is None or now.on_cpu <= begun.on_cpu:
        return ran_beside_others
    return wall - (now.on_cpu - begun.on_cpu) >= OFF_CPU_SHARE * wall


_lock = threading.Lock()
"""Guards every lane's counts and each step's start and end (``_Step``)."""
_running = 0
"""Steps running now, in every lane (a timed-out one still running included): only for
``slowed_by_load`` where a thread's times cannot be read."""
_starts = 0
"""Steps begun so far, in every lane: a step that ran beside one begun after it sees it here
(same use)."""


@dataclass(slots=True)
class _Step:
    """One step's start, decided once under ``_lock``: begun by its thread, or given up by its
    caller, whichever comes first; and its thread's times when it began and when it ended."""

    submitted: float
    started: float | None = None
    thread: tuple[int, int] = (0, 0)
    """Its thread's native id and ident."""
    begun: ThreadTimes | None = None
    ended: ThreadTimes | None = None
    others_running: int = 0
    """Steps running in any lane when it began."""
    starts_before: int = 0
    """``_starts`` when it began, itself included."""
    given_up: bool = False

    def ran_out_for_load(self, queued: float, timeout: float) -> bool:
        """Whether the step, begun after ``queued`` seconds and timed out, ran out for the load
        (``slowed_by_load``): its thread's times now, or when it ended if it has."""
        now = read_thread_times(*self.thread)
        with _lock:
            ended, beside = self.ended, self.others_running > 0 or _starts > self.starts_before
        if self.begun is None:
            return beside or queued > QUEUED_SHARE * timeout
        return slowed_by_load(self.begun, ended or now, beside, queued, timeout)


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
        queue, ``SlowedByLoad`` when it ran out waiting for a CPU (``slowed_by_load``),
        ``TimeoutError`` when it ran out by itself (the work goes on in its thread, and
        holds its place in the lane until it ends). A caller cancelled (its client left)
        before a thread began the work: it never runs."""
        self._admit()
        step = _Step(time.monotonic())

        def begun(*work_args: Any) -> T:
            global _running, _starts
            thread = threading.get_native_id(), threading.get_ident()
            times = read_thread_times(*thread)
            with _lock:
                if step.given_up:
                    raise NotStarted("the step's caller gave up before it began")
                step.started, step.others_running = time.monotonic(), _running
                step.thread, step.begun = thread, times
                _running += 1
                _starts += 1
                step.starts_before = _starts
            try:
                return work(*work_args)
            finally:
                times = read_thread_times(*thread)
                with _lock:
                    _running -= 1
                    step.ended = times

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
            if isinstance(exc, TimeoutError) and job.done() and not job.cancelled():
                return job.result()  # done in time, the loop came back late (review mr7)
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
                if step.ran_out_for_load(waited, timeout):
                    raise SlowedByLoad(f"the step ran out of its {timeout:g} s in the "
                                       f"{self.name} lane, queued or off its CPU (load)"
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
