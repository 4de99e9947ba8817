"""How many threads should the instruction step's long lane have (``proxy.step_lanes``)?

Four bounded long steps (a 196,000-character turn cut by ``proxy.guard.bounded_turn``, each
with a distinct prefix so no cache answers) run on a pool of 1, 2 and 4 threads; prints the
total and per-step wall time, each as a ratio to the 1-thread pool measured in the same run,
and the CPU model and core count.

    PYTHONPATH=. python bench/bench_step_lanes.py
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from harness import cpu_model  # also puts the tree first on sys.path

from proxy.guard import bounded_turn
from proxy.services import build_services
from proxy.settings import Deployment, GatewayConfig
from vilmo.types import Messages

PAD = "revenge hurt kill neighbour "
STEPS = 4


def main() -> None:
    services = build_services(GatewayConfig(model_list=[
        Deployment(model_name="m", litellm_params={"model": "openai/stub"})]))
    generator, policy = services.instructions, services.policies.get("default")

    def step(tag: str) -> float:
        turn: Messages = [{"role": "user", "content": f"{tag} {time.time()} " + PAD * 7000}]
        started = time.perf_counter()
        generator.generate(bounded_turn(turn), policy)
        return time.perf_counter() - started

    step("warm-up")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cpu: {cpu_model()}, cores: {cores}")
    base: tuple[float, float] | None = None
    for threads in (1, 2, 4):
        with ThreadPoolExecutor(threads) as pool:
            started = time.perf_counter()
            walls = list(pool.map(step, [f"t{threads}-{i}" for i in range(STEPS)]))
            total = time.perf_counter() - started
        per_step = sum(walls) / len(walls)
        base = base or (total, per_step)
        print(f"threads={threads}: {STEPS} steps in {total:.2f} s ({total / base[0]:.2f}x), "
              f"per step {per_step:.2f} s ({per_step / base[1]:.2f}x), max {max(walls):.2f} s")


if __name__ == "__main__":
    main()
