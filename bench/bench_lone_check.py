"""A lone check's judge time and scores with its batches cut to share the cores
(``vilmo.judge.pooling.balanced_batches`` for ``ITEM_CORES``, the shipped ``item_batches``)
against its length batches alone (``ITEM_CORES`` = 1; issue 16; a benchmark, not a test).

One process, one judge, the two batchings interleaved per round (so both see the same load):
the latency of ``BuiltinClassifier.score`` for the benchmarks' two replies after distinct
prompts (medians, ratio), then the scores of a few hundred (prompt, reply) texts from
../shared/data (JailbreakBench and FULCRA dev rows), each scored alone as a gateway's check
at c=1 is: the largest score difference and how many `default`-policy verdicts change, and
with ``--fp32`` how far each batching is from the fp32 network's scores.

    python bench/bench_lone_check.py [--rounds 30] [--texts 300] [--fp32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_serving import REPLY as SERVING_REPLY
from compare_litellm import REPLY as COMPARE_REPLY
from harness import prompts

from vilmo.datasets.readers import data_dir, fulcra, jailbreakbench
from vilmo.judge import pooling, value_model
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_onnx import serving_cores
from vilmo.policy import Policy, load_policy
from vilmo.verdict import decide, rules_of

CUT_FOR = {"before": 1, "after": pooling.ITEM_CORES}
"""The cores a text's rows are cut for: 1, its length batches; the shipped ``ITEM_CORES``."""


@contextmanager
def batching(name: str) -> Iterator[None]:
    shipped = pooling.ITEM_CORES
    pooling.ITEM_CORES = CUT_FOR[name]
    try:
        yield
    finally:
        pooling.ITEM_CORES = shipped


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def started_judge() -> tuple[value_model.BuiltinClassifier, Policy, list[str]]:
    """A warm judge without a cache, the `default` policy and its values; the host printed."""
    judge = value_model.BuiltinClassifier(cache_size=0)
    judge.warm_up()
    policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    print(f"CPU: {cpu()}, {len(os.sched_getaffinity(0))} cores, serving cores "
          f"{serving_cores()}, load average {os.getloadavg()[0]:.1f} at the start\n")
    return judge, policy, list(rules_of(policy))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--fp32", action="store_true",
                        help="also compare both with the fp32 network's scores (needs torch)")
    args = parser.parse_args()
    judge, policy, ids = started_judge()
    print("| reply | before (ms) | after (ms) | after / before |\n|---|---|---|---|")
    for label, reply in (("bench_serving.REPLY", SERVING_REPLY),
                         ("compare_litellm.REPLY", COMPARE_REPLY)):
        asks = prompts(args.rounds + 3)
        ms: dict[str, list[float]] = {name: [] for name in CUT_FOR}
        for r, ask in enumerate(asks):
            for name in (list(CUT_FOR) if r % 2 == 0 else list(CUT_FOR)[::-1]):
                with batching(name):
                    started = time.perf_counter()
                    judge.score([ScoreInput(reply, ask)], ids)
                    if r >= 3:  # warm-up rounds dropped
                        ms[name].append((time.perf_counter() - started) * 1000)
        before, after = statistics.median(ms["before"]), statistics.median(ms["after"])
        print(f"| {label} | {before:.1f} | {after:.1f} | {after / before:.2f} |")
    root = data_dir()
    half = args.texts // 2
    texts = ([ScoreInput(r.response, r.goal) for r in jailbreakbench(root, "dev")][:half]
             + [ScoreInput(r.response, r.prompt) for r in fulcra(root, "dev")][:args.texts - half])
    reference = value_model.BuiltinClassifier(cache_size=0, quantize=False) if args.fp32 else None
    worst, moved = 0.0, 0
    off: dict[str, list[float]] = {"before": [], "after": []}
    unlike: dict[str, int] = {"before": 0, "after": 0}
    for item in texts:
        found = {}
        for name in CUT_FOR:
            with batching(name):
                found[name] = judge.score([item], ids)[0].violation
        old, new = found["before"], found["after"]
        worst = max(worst, *(abs(old[v] - new[v]) for v in ids))
        moved += decide(old, policy).action != decide(new, policy).action
        if reference is not None:
            fp32 = reference.score([item], ids)[0].violation
            for name, got in found.items():
                off[name] += [abs(got[v] - fp32[v]) for v in ids]
                unlike[name] += decide(got, policy).action != decide(fp32, policy).action
    print(f"\n{len(texts)} texts scored alone, {len(ids)} values: largest score difference "
          f"{worst:.4f}, verdicts changed: {moved}")
    if reference is not None:
        for name, gaps in off.items():
            print(f"{name} against the fp32 network: mean |difference| "
                  f"{statistics.mean(gaps):.5f}, largest {max(gaps):.4f}, verdicts "
                  f"unlike fp32's: {unlike[name]}")


if __name__ == "__main__":
    main()
