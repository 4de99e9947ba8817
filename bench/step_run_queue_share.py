"""What share of a step's time its thread waits on a run queue (``proxy.step_lanes.
OFF_CPU_SHARE``'s run-queue part, read from ``/proc/self/task/<tid>/schedstat``), alone and under load.

Everything is pinned to one core (``os.sched_setaffinity``) so that the load is the same on
any machine: a CPU-bound step (pure Python, about 0.2 s) alone, beside 1 and 3 busy
processes on its core, a step that sleeps (its own I/O) beside 3, and a CPU-bound step beside
a pure-Python thread of its own process (GIL contention: its wait is for the GIL, not for a
CPU, and does not show as run-queue wait). Prints each case's median share and its step time
as a ratio to the step alone, measured in the same run; and the cost of one read.

    PYTHONPATH=. python bench/step_run_queue_share.py

On a machine others load (``/proc/pressure/cpu``), the step "alone" is not: its share is the
machine's load (2 shared cores at 90 % CPU pressure: 0.46-0.63).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import threading
import time
from collections.abc import Callable

from proxy.step_lanes import thread_times

ROUNDS = 5
WORK = 1_500_000


def burn(n: int = WORK) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def busy(stop: mp.synchronize.Event, core: int) -> None:
    os.sched_setaffinity(0, {core})
    while not stop.is_set():
        burn(200_000)


def share(step: Callable[[], object]) -> tuple[float, float]:
    """The step's run-queue share and its seconds, in a thread of its own (as a lane's)."""
    out: list[tuple[float, float]] = []

    def run() -> None:
        ids = threading.get_native_id(), threading.get_ident()
        begun = thread_times(*ids)
        step()
        now = thread_times(*ids)
        assert begun.run_queue is not None and now.run_queue is not None, "no schedstat"
        wall = now.wall - begun.wall
        out.append(((now.run_queue - begun.run_queue) / wall, wall))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def case(name: str, step: Callable[[], object], base: float | None) -> float:
    results = [share(step) for _ in range(ROUNDS)]
    shares = sorted(s for s, _ in results)
    seconds = statistics.median(w for _, w in results)
    ratio = f"x{seconds / base:.2f} of alone" if base else "(the baseline)"
    print(f"{name:44s} run-queue share median {statistics.median(shares):.2f} "
          f"(min {shares[0]:.2f}, max {shares[-1]:.2f}); step {ratio}")
    return seconds


def main() -> None:
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    ids = threading.get_native_id(), threading.get_ident()
    started = time.perf_counter()
    for _ in range(1000):
        thread_times(*ids)
    print(f"one read of schedstat: {(time.perf_counter() - started) * 1e3:.0f} us")
    base = case("CPU step alone", burn, None)
    for others in (1, 3):
        stop = mp.Event()
        procs = [mp.Process(target=busy, args=(stop, core)) for _ in range(others)]
        for proc in procs:
            proc.start()
        time.sleep(0.2)
        case(f"CPU step beside {others} busy process(es)", burn, base)
        if others == 3:
            case("sleeping step (0.2 s, I/O) beside 3 busy", lambda: time.sleep(base), base)
        stop.set()
        for proc in procs:
            proc.join()
    stop_gil = threading.Event()

    def python_thread() -> None:
        while not stop_gil.is_set():
            burn(200_000)

    gil = threading.Thread(target=python_thread)
    gil.start()
    case("CPU step beside a pure-Python thread (GIL)", burn, base)
    stop_gil.set()
    gil.join()


if __name__ == "__main__":
    main()
