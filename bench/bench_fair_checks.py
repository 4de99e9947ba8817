"""A small check beside a large one on the same policy (a benchmark, not a test; issue 12,
point 2): how long a short reply's check takes alone, and while a check of a long text is
running, with the real classifier. The baseline, same run: the batcher with splitting off
(one part per text, as before the fix), where the small check waits for the whole large one.

    python bench/bench_fair_checks.py [--chars 100000] [--small 5]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

from bench_classifier import cpu_info

from vilmo.batcher import MicroBatcher
from vilmo.classifier import ScoreInput
from vilmo.value_model import BuiltinClassifier

IDS = ["mft.care", "mft.fairness", "safety.violence"]
SMALL = ScoreInput("Talk to him calmly tomorrow and tell him how the insult made you feel.",
                   "My neighbour insulted me. What should I do?")


def large_text(chars: int, salt: str) -> str:
    sentence = (f"The {salt} village lay in a green valley where the river turned twice before "
                "the mill, and every spring the children raced paper boats from the bridge. ")
    return (sentence * (chars // len(sentence) + 1))[:chars]


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


async def run(chars: int, small: int) -> None:
    classifier = BuiltinClassifier(cache_size=0)
    classifier.score([SMALL], IDS)
    fair = MicroBatcher(classifier)
    whole = MicroBatcher(classifier, part_chars=10**9, max_batch_chars=10**9)  # the old way
    alone = []
    for i in range(small):
        t = time.perf_counter()
        await fair.score(ScoreInput(f"{SMALL.response} (alone {i})", SMALL.prompt), IDS)
        alone.append(time.perf_counter() - t)
    base = statistics.median(alone)
    print(f"small check alone: median {base * 1000:.0f} ms")
    for name, batcher in (("split into parts", fair), ("one part (before)", whole)):
        waits, took, grown = await measure(batcher, chars, small, name.split()[0])
        print(f"{name:18s} beside a {chars:,}-character check ({took:.1f} s): small check "
              f"median {statistics.median(waits) * 1000:.0f} ms ({statistics.median(waits) / base:.1f}x "
              f"alone), first {waits[0] * 1000:.0f} ms; peak RSS +{grown:.0f} MB")
        await batcher.aclose()
    cpu = cpu_info()["cpu"]
    print(f"CPU: {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.chars, args.small))


if __name__ == "__main__":
    main()
