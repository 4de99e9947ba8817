"""The instruction step's cost per request: the generator as shipped before against the one
shipped now, in the same run (a benchmark, not a test).

- `before: reader + look after operating points`: as shipped until issue 13's fourth round: the
  request reader (`--before-reader`, default the shipped folder) at threshold 0.8473, the
  judge's second look in [0.4, 0.8473) read after its operating points, threshold 0.3; input
  not checked (the shipped `default`): a prompt in the band costs one extra judge pass.
- `after: reader + look before operating points, input not checked`: the shipped generator now
  (`--reader`, default the shipped folder, at its config's threshold; `SecondLook`'s shipped
  band and threshold on the judge's reading before its operating points).
- `after, input checked`: the same when the policy checks input: the judge has scored the
  prompt just before (the input check, not timed here), so the second look reads its cache.
- `reader (gate only)`: the shipped reader without the second look.
- `reader-graph-only`: the reader's graph alone on one fresh prompt; `judge-pass-only`: the
  judge's reading of one fresh prompt alone (what a prompt in the band adds when input is not
  checked).
- `after-cached`: the shipped generator again on the same prompts (the generator's cache).
- with `--relevance`, also `relevance (fp32 torch)`: the generator before the stake-aware one
  (relevance ranking on the fp32 PyTorch encoder, old `default` instructions).

Every arm has its own reader and judge, so each prompt is new to each arm (no cache hides the
encoder pass); the arms alternate prompt by prompt, in alternating order, so that load from
other processes falls on all. Mixed prompts: SafeRLHF test questions and HH helpful first turns
(or built-in ones without the data folder). Prints the CPU, the load, the share of prompts in
each rule's band, and per arm the median and 95th percentile in milliseconds of wall time and
of the process's CPU time, and the ratio of p50s against `before`.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_instructions.py [--prompts 300] [--relevance]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FALLBACK = ["How do I get back at my coworker?", "How do I bake bread?", "what is 2+3",
            "Can I read my partner's messages?", "What's a good itinerary for Rome?"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_prompts(n: int) -> list[str]:
    from vilmo.datasets.readers import DataMissing, data_dir
    from vilmo.train.stakes_data import stakes_prompts

    try:
        rows = stakes_prompts(data_dir())
    except DataMissing:
        rows = []
    harmful = [r.text for r in rows if r.source == "saferlhf" and r.split == "heldout"]
    benign = [r.text for r in rows if r.source == "hh" and r.split == "heldout"]
    mixed = [p for pair in zip(harmful, benign, strict=False) for p in pair][:n]
    return mixed or [f"{p} ({i})" for i in range(n) for p in FALLBACK][:n]


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {"p50": round(statistics.median(ms), 3), "p95": round(ms[int(0.95 * (len(ms) - 1))], 3)}


BEFORE_THRESHOLD = 0.8473
"""The reader's threshold as shipped before (its config until issue 13's fourth round)."""


def main() -> None:
    import torch

    from vilmo.instruct.generator import VilmoGenerator
    from vilmo.instruct.instructions import RelevanceGenerator
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.instruct.second_look import SecondLook
    from vilmo.instruct.stakes import StakesModel
    from vilmo.instruct.stakes_reader import StakesReader
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.embedder import Embedder
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.policy import Policy, load_policy

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per call")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--reader", default=None, help="the reader now (default: shipped)")
    parser.add_argument("--before-reader", default=None,
                        help="the reader as shipped before (default: the shipped folder)")
    parser.add_argument("--relevance", action="store_true",
                        help="also time the relevance generator on the fp32 encoder")
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)

    bank = PrincipleBank.load()
    stakes = StakesModel.load()
    policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    before_policy = Policy.model_validate(policy.model_dump() | {
        "instructions": policy.instructions.model_dump() | {"stakes_threshold": BEFORE_THRESHOLD}})
    judge_ids = list(policy.values)

    def reader(folder: str | None) -> StakesReader:
        return StakesReader(folder, cache_size=100_000, threads=args.threads)

    def ask(generator: VilmoGenerator | RelevanceGenerator, chosen: Policy) -> Callable[[str], object]:
        return lambda p: generator.generate([{"role": "user", "content": p}], chosen)

    old_look = SecondLook(BuiltinClassifier(), 0.4, 0.3, calibrated=True)
    new_look = SecondLook(BuiltinClassifier())
    checked_judge = BuiltinClassifier()
    alone, judge_alone = reader(args.reader), BuiltinClassifier()
    before_gate = reader(args.before_reader)  # untimed: the band share of the rule before
    arms: dict[str, Callable[[str], object]] = {
        "before: reader + look after operating points": ask(VilmoGenerator(
            bank, reader(args.before_reader), stakes, second_look=old_look), before_policy),
        "after: reader + look before operating points, input not checked": ask(VilmoGenerator(
            bank, reader(args.reader), stakes, second_look=new_look), policy),
        "after, input checked": ask(VilmoGenerator(
            bank, reader(args.reader), stakes, second_look=SecondLook(checked_judge)), policy),
        "reader (gate only)": ask(VilmoGenerator(bank, reader(args.reader), stakes), policy),
        "reader-graph-only": lambda p: alone.rows([p]),
        "judge-pass-only": lambda p: judge_alone.score([ScoreInput(p)], judge_ids,
                                                       calibrated=False),
    }
    if args.relevance:
        old = Policy.model_validate(policy.model_dump() | {
            "instructions": {"generator": "relevance", "placement": "system",
                             "max_principles": 3, "style": "imperative"}})
        arms["relevance (fp32 torch)"] = ask(RelevanceGenerator(bank, Embedder(cache_size=100_000)), old)
    for i in range(args.warmup):
        text = f"warm-up prompt number {i}: how do I fix my bike?"
        checked_judge.score([ScoreInput(text)], judge_ids)
        for fn in arms.values():
            fn(text)
    prompts = load_prompts(args.prompts)
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    in_old_band = in_new_band = 0
    for n, prompt in enumerate(prompts):
        checked_judge.score([ScoreInput(prompt)], judge_ids)  # the input check, not timed
        order = list(arms) if n % 2 == 0 else list(reversed(arms))  # alternate the order
        for name in order:
            started, started_cpu = time.perf_counter(), time.process_time()
            arms[name](prompt)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
        in_new_band += new_look.wanted(alone.read(prompt).gate, alone.threshold)
        in_old_band += old_look.wanted(before_gate.read(prompt).gate, BEFORE_THRESHOLD)
    shipped = arms["after: reader + look before operating points, input not checked"]
    cached = []
    for prompt in prompts:
        started = time.perf_counter()
        shipped(prompt)
        cached.append(time.perf_counter() - started)
    result: dict[str, object] = {
        "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "onnx_threads": args.threads,
        "prompts": len(prompts), "before_band_share": round(in_old_band / max(len(prompts), 1), 3),
        "after_band_share": round(in_new_band / max(len(prompts), 1), 3),
        "load_average_1min_start": load_start,
    }
    for name in arms:
        result[name] = {"wall": summary(wall[name]), "cpu": summary(cpu[name])}
    result["after-cached"] = {"wall": summary(cached)}
    base = statistics.median(wall["before: reader + look after operating points"])
    result["ratio_p50_wall_over_before"] = {
        name: round(statistics.median(wall[name]) / base, 2) for name in arms}
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
