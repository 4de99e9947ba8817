"""Batches of one text's rows (``vilmo.judge.pooling.item_batches``) against the batching
before it, cut by the cores idle now over every row of a call (a benchmark, not a test).

The int8 graph quantises activations per batch, pad positions included, so before, a text's
scores depended on the load (a lone check's batches were cut for the idle cores) and on the
other texts of its call (the micro-batcher's other requests). One process, one judge, the two
batchings interleaved (so both see the same load):

1. scores: JailbreakBench dev replies after their request and ``tests/reply_cases.py``'s
   replies, each scored alone on an idle judge, alone with another check's batches running
   (``value_onnx._RUNNING`` held), and in calls of ``--mixed`` texts of different lengths
   (as the micro-batcher's batches mix requests): the largest score difference, the share of
   (text, value) flags at the `default` policy's thresholds and of verdicts that change;
2. throughput: ``BuiltinClassifier.score`` on ``--n`` distinct 60-word replies after a
   prompt in one call (``bench_classifier``'s batched rate), the same through the
   ``MicroBatcher`` (its rate), and a lone check's latency (``bench_serving.REPLY``); medians
   over alternated rounds and the after / before ratio.

    python bench/bench_item_batches.py [--texts 200] [--n 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_classifier import replies
from bench_lone_check import started_judge
from bench_serving import REPLY as SERVING_REPLY
from reply_cases import ASK_TEXT, BENIGN, EMBEDDED, VIOLENT

from vilmo.datasets.readers import data_dir, jailbreakbench
from vilmo.judge import pooling, value_model, value_onnx
from vilmo.judge.batcher import MicroBatcher
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.pooling import balanced_batches, item_batches
from vilmo.policy import Policy
from vilmo.verdict import decide, rules_of

Batching = Callable[[Sequence[int], Sequence[int], int], list[list[int]]]
Scores = list[dict[str, float]]


def before(lengths: Sequence[int], owner: Sequence[int], size: int) -> list[list[int]]:
    """The batching before: every row of the call, cut for the cores no check used now."""
    return balanced_batches(lengths, size, max(1, value_onnx.serving_cores()
                                               - value_onnx._RUNNING.now()))


WAYS: dict[str, tuple[Batching, int]] = {"before": (before, pooling.ITEM_CORES),
                                          "after": (item_batches, pooling.ITEM_CORES),
                                          "after, uncut": (item_batches, 1)}
"""Each batching, and the cores ``item_batches`` cuts a text's rows for (1: never cut)."""


@contextmanager
def batching(name: str) -> Iterator[None]:
    how, cores = WAYS[name]
    shipped = pooling.ITEM_CORES
    setattr(value_model, "item_batches", how)  # noqa: B010 - the one name the batchings share
    pooling.ITEM_CORES = cores
    try:
        yield
    finally:
        setattr(value_model, "item_batches", item_batches)  # noqa: B010
        pooling.ITEM_CORES = shipped


@contextmanager
def loaded() -> Iterator[None]:
    """Another check's batches running (as ``run_batches`` counts them)."""
    value_onnx._RUNNING.enter()
    try:
        yield
    finally:
        value_onnx._RUNNING.leave()


def compare(ids: list[str], policy: Policy, base: Scores, other: Scores) -> str:
    rules = rules_of(policy)
    worst = max(abs(a[v] - b[v]) for a, b in zip(base, other, strict=True) for v in ids)
    flags = sum((a[v] >= rules[v].threshold) != (b[v] >= rules[v].threshold)
                for a, b in zip(base, other, strict=True) for v in ids)
    verdicts = sum(decide(a, policy).action != decide(b, policy).action
                   for a, b in zip(base, other, strict=True))
    return (f"largest |difference| {worst:.4f}, flags flipped {flags} of {len(base) * len(ids)} "
            f"({100 * flags / (len(base) * len(ids)):.2f} %), verdicts changed {verdicts} of "
            f"{len(base)} ({100 * verdicts / len(base):.1f} %)")


def agreement(judge: value_model.BuiltinClassifier, texts: list[ScoreInput], mixed: int,
              ids: list[str], policy: Policy) -> None:
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)  # neighbours of different lengths, as requests arrive
    print(f"\n{len(texts)} texts, {len(ids)} values of the `default` policy, calls of {mixed} "
          "mixed texts\n")
    for name in ("before", "after"):
        with batching(name):
            alone = [judge.score([t], ids)[0].violation for t in texts]
            with loaded():
                busy = [judge.score([t], ids)[0].violation for t in texts]
            together: dict[int, dict[str, float]] = {}
            for start in range(0, len(order), mixed):
                group = order[start:start + mixed]
                for i, s in zip(group, judge.score([texts[i] for i in group], ids), strict=True):
                    together[i] = s.violation
        print(f"- {name}: alone idle vs alone under load: {compare(ids, policy, alone, busy)}")
        print(f"- {name}: alone vs mixed: "
              f"{compare(ids, policy, alone, [together[i] for i in range(len(texts))])}")
        if name == "before":
            old_alone = alone
    print(f"- alone, before vs after: {compare(ids, policy, old_alone, alone)}")


def throughput(judge: value_model.BuiltinClassifier, n: int, rounds: int,
               ids: list[str]) -> None:
    texts = replies(n * (2 * len(WAYS) * rounds + 1))
    prompt = "What should I do this weekend?"
    taken = iter(range(0, len(texts), n))

    def fresh() -> list[ScoreInput]:
        start = next(taken)  # distinct texts each time: the judge's cache never helps
        return [ScoreInput(t, prompt) for t in texts[start:start + n]]

    judge.score(fresh(), ids)  # warm-up
    kinds = ("batched", "micro_batcher")
    rates: dict[str, dict[str, list[float]]] = {
        f"{k} {unit}": {w: [] for w in WAYS} for k in kinds
        for unit in ("(replies/s)", "(CPU ms per reply, all threads)")}

    def measured(kind: str, name: str, run: Callable[[list[ScoreInput]], object]) -> None:
        items = fresh()
        cpu, started = time.process_time(), time.perf_counter()
        run(items)
        rates[f"{kind} (replies/s)"][name].append(n / (time.perf_counter() - started))
        rates[f"{kind} (CPU ms per reply, all threads)"][name].append(
            (time.process_time() - cpu) * 1000 / n)

    for r in range(rounds):
        for name in (list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]):
            with batching(name):
                measured("batched", name, lambda items: judge.score(items, ids))
                measured("micro_batcher", name,
                         lambda items: asyncio.run(_batched(judge, items, ids)))
    lone: dict[str, list[float]] = {w: [] for w in WAYS}
    for r in range(3 * rounds + 2):
        for name in (list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]):
            with batching(name):
                started = time.perf_counter()
                judge.score([ScoreInput(SERVING_REPLY, f"{prompt} ({r}, {name})")], ids)
                if r >= 2:
                    lone[name].append((time.perf_counter() - started) * 1000)
    others = list(WAYS)[1:]
    print(f"\n| measure ({n} replies of 60 words after a prompt) | before | "
          + " | ".join(f"{w} | {w} / before" for w in others) + " |\n|---|---|"
          + "---|---|" * len(others))
    for kind, by in [*rates.items(), ("lone check, bench_serving.REPLY (ms)", lone)]:
        old = statistics.median(by["before"])
        print(f"| {kind} | {old:.1f} | " + " | ".join(
            f"{statistics.median(by[w]):.1f} | {statistics.median(by[w]) / old:.2f}"
            for w in others) + " |")


async def _batched(judge: value_model.BuiltinClassifier, items: list[ScoreInput],
                   ids: list[str]) -> None:
    batcher = MicroBatcher(judge, max_batch=64)
    await asyncio.gather(*(batcher.score(i, ids) for i in items))
    await batcher.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=200, help="0: throughput only")
    parser.add_argument("--mixed", type=int, default=16)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    judge, policy, ids = started_judge()
    cases = [ScoreInput(t, ASK_TEXT) for t in [*EMBEDDED.values(), *BENIGN.values(), VIOLENT]]
    dev = [ScoreInput(r.response, r.goal) for r in jailbreakbench(data_dir(), "dev")]
    if args.texts:
        agreement(judge, cases + dev[:args.texts - len(cases)], args.mixed, ids, policy)
    throughput(judge, args.n, args.rounds, ids)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
