"""A small check beside a large one on the same policy (a benchmark, not a test; issue 12,
point 2): how long a short reply's check takes alone, and while a check of a long text is
running, with the real classifier. The baseline, same run: the batcher with splitting off
(one part per text, as before the fix), where the small check waits for the whole large one.
Each runs in its own process; peak RSS growth is measured across the large check.

    python bench/bench_fair_checks.py [--chars 100000] [--small 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time

from bench_classifier import cpu_info

from vilmo.judge.batcher import MicroBatcher
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier

IDS = ["mft.care", "mft.fairness", "safety.violence"]
SMALL = ScoreInput("Talk to him calmly tomorrow and tell him how the insult made you feel.",
                   "My neighbour insulted me. What should I do?")


def large_text(chars: int, salt: str) -> str:
    """A benign story, no two sentences alike (the classifier scores a repeated text once)."""
    text, day = "", 0
    while len(text) < chars:
        day += 1
        text += (f"On day {day} the {salt} village lay quiet in its green valley, where the "
                 f"river turned {day % 7 + 2} times before the mill and the children raced "
                 f"{day % 11 + 3} paper boats from the bridge. ")
    return text[:chars]


async def measure(batcher: MicroBatcher, chars: int, small: int, salt: str,
                  ) -> tuple[list[float], float, float]:
    """(small-check latencies while the large check runs, the large check's time, peak RSS
    growth in MB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    large = asyncio.ensure_future(batcher.score(ScoreInput(large_text(chars, salt)), IDS))
    await asyncio.sleep(0.2)  # the large check is under way
    waits = []
    for i in range(small):
        t = time.perf_counter()
        await batcher.score(ScoreInput(f"{SMALL.response} ({salt} {i})", SMALL.prompt), IDS)
        waits.append(time.perf_counter() - t)
    await large
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    return waits, time.perf_counter() - started, grown


VARIANTS = {"split": {}, "whole": {"part_chars": 10**9, "max_batch_chars": 10**9}}
"""The batcher as shipped, and with splitting off (one part per text: as before the fix)."""


async def run(variant: str, chars: int, small: int) -> None:
    classifier = BuiltinClassifier(cache_size=0)
    batcher = MicroBatcher(classifier, **VARIANTS[variant])  # type: ignore[arg-type]
    alone = []
    for i in range(small + 1):
        t = time.perf_counter()
        await batcher.score(ScoreInput(f"{SMALL.response} (alone {i})", SMALL.prompt), IDS)
        alone.append(time.perf_counter() - t)
    base = statistics.median(alone[1:])  # the first call loads the model
    waits, took, grown = await measure(batcher, chars, small, variant)
    print(f"{variant:5s}: small check alone {base * 1000:.0f} ms; beside a {chars:,}-character "
          f"check ({took:.1f} s): first {waits[0] * 1000:.0f} ms ({waits[0] / base:.0f}x), "
          f"median {statistics.median(waits) * 1000:.0f} ms; peak RSS +{grown:.0f} MB",
          flush=True)
    await batcher.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=5)
    parser.add_argument("--variant", choices=VARIANTS)
    args = parser.parse_args()
    if args.variant:
        asyncio.run(run(args.variant, args.chars, args.small))
        return
    print(f"CPU: {cpu_info()['cpu']}, {os.cpu_count()} CPUs")
    for variant in VARIANTS:  # each in its own process, so peak RSS is its own
        subprocess.run([sys.executable, __file__, "--variant", variant, "--chars",
                        str(args.chars), "--small", str(args.small)], check=True)


if __name__ == "__main__":
    main()
