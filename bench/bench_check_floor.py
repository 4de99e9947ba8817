"""What bounds a lone `default` output check at c=1 (a benchmark, not a test; issue 16).

The check of a ~150-token reply after a prompt runs two model rows (``bench/trace_output_check.py``):
the reply after its prompt (the whole reading, ~172 tokens) and the reply alone (~155), each its
own batch, side by side on the two cores (``vilmo.judge.value_onnx.run_batches``); the sentence
rows run only past the span gate, which the benchmarks' reply does not reach. So the check's
wall time is about the longer row's run plus the judge's Python. This measures, in one process,
each round visiting every variant in a rotated order (so all see the same load):

* ``shipped``: ``BuiltinClassifier.score`` of the reply (no cache), as the gateway's check runs it;
* ``whole row, 1 thread``: that reply's after-prompt row alone, through the same session: the
  floor of any change that keeps the whole reading and takes the alone row off the critical path;
* ``whole row, 2 threads``: the same row through a 2-thread session of the same graph;
* ``both rows, 2 threads, in turn``: the two rows one after the other, 2 threads each.

and checks that the 2-thread session's outputs equal the shipped 1-thread session's, bit for
bit, on every row it ran (MLAS splits a product's outputs over threads, never its sums).

    python bench/bench_check_floor.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np
from bench_lone_check import cpu
from compare_litellm import REPLY
from harness import prompts

from vilmo.instruct.instructions import prompt_text
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import ALONE, WHOLE, BuiltinClassifier
from vilmo.judge.value_onnx import Int8Session
from vilmo.judge.windowing import pad_numpy
from vilmo.policy import load_policy
from vilmo.verdict import rules_of


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    judge = BuiltinClassifier(cache_size=0)
    judge.warm_up()
    model = judge._model()
    one = model.net
    assert isinstance(one, Int8Session)
    two = Int8Session(one.path, threads=2)
    ids = list(rules_of(load_policy(REPO / "vilmo" / "policies" / "default.yaml")))
    items = [ScoreInput(REPLY, prompt_text([{"role": "user", "content": p}]))
             for p in prompts(args.rounds + 3)]
    ms: dict[str, list[float]] = {}
    differ = compared = 0

    def rows_of(item: ScoreInput) -> tuple[list[int], list[int]]:
        read = judge._rows([item], True, True)
        whole = next(r for r, k in zip(read.rows, read.kind, strict=True) if k == WHOLE)
        alone = next(r for r, k in zip(read.rows, read.kind, strict=True) if k == ALONE)
        return whole, alone

    def shipped(item: ScoreInput) -> None:
        judge.score([item], ids)

    def whole_one(item: ScoreInput) -> None:
        one.graph_outputs(*pad_numpy([rows_of(item)[0]]))

    def whole_two(item: ScoreInput) -> None:
        two.graph_outputs(*pad_numpy([rows_of(item)[0]]))

    def both_two(item: ScoreInput) -> None:
        for row in rows_of(item):
            two.graph_outputs(*pad_numpy([row]))

    variants: dict[str, Callable[[ScoreInput], None]] = {
        "shipped (both rows side by side, 1 thread each)": shipped,
        "whole row only, 1 thread": whole_one,
        "whole row only, 2 threads": whole_two,
        "both rows in turn, 2 threads each": both_two}
    names = list(variants)
    for r, item in enumerate(items):
        turn = names[r % len(names):] + names[:r % len(names)]
        for name in turn:
            started = time.perf_counter()
            variants[name](item)
            if r >= 3:  # warm-up rounds dropped
                ms.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    for item in items:  # the same outputs through either session, bit for bit
        for row in rows_of(item):
            batch = pad_numpy([row])
            differ += not all(np.array_equal(a, b) for a, b in zip(
                one.graph_outputs(*batch), two.graph_outputs(*batch), strict=True))
            compared += 1
    base = statistics.median(ms[names[0]])
    load = os.getloadavg()
    print(f"CPU: {cpu()}, {len(os.sched_getaffinity(0))} cores, load average {load[0]:.1f} / "
          f"{load[1]:.1f} at the end; {args.rounds} rounds, compare_litellm.REPLY after "
          "distinct grievance prompts\n")
    print("| variant | wall p50 ms | p25 ms | × shipped |\n|---|---|---|---|")
    for name in names:
        got = sorted(ms[name])
        print(f"| {name} | {statistics.median(got):.1f} | {got[len(got) // 4]:.1f} | "
              f"{statistics.median(got) / base:.2f} |")
    print(f"\n2-thread outputs unlike the 1-thread session's: {differ} of {compared} rows")


if __name__ == "__main__":
    main()
