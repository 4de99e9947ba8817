"""The instruction step's own time, in process, of this tree and a baseline tree (issue 16).

Each tree runs in its own process, built as the gateway builds it (the request reader, the
judge's second look, the embedded store's caches behind a ``CacheWriter``), and times
``Guard.instruction`` for the ``default`` policy at c=1 on the same distinct grievance prompts,
the two trees taking turns prompt by prompt. Model time: the request reader's ONNX runs and the
second look's judge batches (wall time); the rest is the step's Python and numpy. Medians in ms.

    python bench/bench_instruction_step.py --baseline-tree /tmp/base [--prompts 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from harness import ENV, REPO

SERVE = r"""
import asyncio, json, sys, tempfile, threading, time
from pathlib import Path
import vilmo.judge.value_onnx as vo
model = [0.0]
main, depth = threading.main_thread(), [0]
def timed(f):
    def run(*a, **k):
        if threading.current_thread() is not main or depth[0]:
            return f(*a, **k)
        depth[0] += 1
        start = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            depth[0] -= 1
            model[0] += time.perf_counter() - start
    return run
vo.Int8Session.__call__ = timed(vo.Int8Session.__call__)
vo.Int8Session.outputs = timed(vo.Int8Session.outputs)
vo.run_batches = timed(vo.run_batches)
from proxy.caches import CacheWriter, attach_caches
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.services import build_judge
from proxy.stages import start_trace
from proxy.store import open_store
from proxy.store.config import StoreSettings
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import shipped_reader
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.embedder import OnnxEmbedder
from vilmo.policy_store import SHIPPED_POLICY_DIR, PolicyStore

classifiers = build_judge(OnnxEmbedder(quantized=False))
generator = VilmoGenerator(PrincipleBank.load(), shipped_reader(), StakesModel.load(),
                           second_look=SecondLook(classifiers.builtin))
policy = PolicyStore(SHIPPED_POLICY_DIR, "default", 0).get("default")
generator.generate([{"role": "user", "content": "warm-up"}], policy)
generator.prepare(policy)
classifiers.builtin.score([ScoreInput("warm-up")], ["mft.care"])
store = open_store(StoreSettings(path=Path(tempfile.mkdtemp()) / "state.db"))
attach_caches(generator, store, CacheWriter())
guard = Guard(classifiers, Metrics(["stub"]))
loop = asyncio.new_event_loop()

async def step(prompt):
    start_trace()
    start = time.perf_counter()  # timed inside the loop, as in the gateway (no loop start-up)
    await guard.instruction(generator, [{"role": "user", "content": prompt}], policy)
    return time.perf_counter() - start

print("ready", flush=True)
for line in sys.stdin:
    model[0] = 0.0
    took = loop.run_until_complete(step(json.loads(line)))
    print(json.dumps([took * 1000, model[0] * 1000]), flush=True)
"""


def start(tree: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", SERVE], env={**ENV, "PYTHONPATH": str(tree)},
                               cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{tree} did not start")
    return process


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=300)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "bench"))
    from harness import prompts

    trees = {"baseline": args.baseline_tree.resolve(), "this": REPO}
    processes = {name: start(tree) for name, tree in trees.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    try:
        for i, question in enumerate(prompts(args.prompts)):
            order = list(trees) if i % 2 == 0 else list(trees)[::-1]
            for name in order:
                process = processes[name]
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(json.dumps(question.replace("(case", "(step case")) + "\n")
                process.stdin.flush()
                step, model = json.loads(process.stdout.readline())
                times[name].append((step, model))
    finally:
        for process in processes.values():
            if process.stdin is not None:
                process.stdin.close()
            process.wait(10)
    cpu = platform.processor() or "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in
                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    print(f"instruction step, policy default, c=1, {args.prompts} prompts per tree, interleaved; "
          f"{cpu}, {os.cpu_count()} CPUs; medians in ms\n")
    print("| tree | whole step | model (reader ONNX, judge batches) | rest (Python, numpy) |")
    print("|---|---|---|---|")
    for name, rows in times.items():
        step = statistics.median(s for s, _ in rows)
        model = statistics.median(m for _, m in rows)
        rest = statistics.median(s - m for s, m in rows)
        print(f"| {name} | {step:.2f} | {model:.2f} | {rest:.2f} |")


if __name__ == "__main__":
    main()
