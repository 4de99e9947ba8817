"""The instruction step's cost per request: today's stake-aware generator (the gate alone) against
the one with the judge's second look, in the same run (a benchmark, not a test).

- `main (gate only)`: the stake-aware VILMO generator as on main before the second look: the
  int8 ONNX encoder (`Int8Embedder`, 1 thread per call as in the gateway; `--threads`) and the
  gate, shipped `default` policy.
- `second look, input not checked`: the same with `SecondLook(BuiltinClassifier())`, for a
  policy that does not check input (the shipped `default`): a prompt in the gate's unsure band
  costs one extra pass of the judge.
- `second look, input checked`: the same when the policy checks input: the judge has scored the
  prompt just before (the input check, not timed here), so the second look reads its cache.
- with `--reader [DIR]`, also `reader (gate only)` and `reader + second look, input not checked`
  / `input checked`: the generator reading prompts with the fine-tuned request reader
  (`vilmo.instruct.stakes_reader`: one int8 graph gives the embedding and the gate; the shipped
  gateway's path is `reader + second look`), and `reader-graph-only`: that graph alone on one
  fresh prompt. `reader_second_look_share`: the share of prompts in the reader's unsure band.
- `after-cached`: the second-look generator again on the same prompts (the generator's cache).
- `int8-embedding-only`: one fresh prompt's embedding alone (a separate encoder).
- with `--relevance`, also `relevance (fp32 torch)`: the generator before the stake-aware one
  (relevance ranking on the fp32 PyTorch encoder, old `default` instructions).

Every arm has its own encoder and judge, so each prompt is new to each arm (no cache hides the
embedding); the arms alternate prompt by prompt, in alternating order, so that load from other
processes falls on all. Mixed prompts: SafeRLHF test questions and HH helpful first turns (or
built-in ones without the data folder). Prints the CPU, the load, the share of prompts that got
the judge's second look, and per arm the median and 95th percentile in milliseconds of wall
time and of the process's CPU time (less sensitive to other processes' load), and the ratio of
p50s against `main (gate only)`.

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


def main() -> None:
    import torch

    from vilmo.instruct.generator import VilmoGenerator
    from vilmo.instruct.instructions import RelevanceGenerator
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.instruct.second_look import SecondLook
    from vilmo.instruct.stakes import StakesModel
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.embedder import Embedder, Int8Embedder
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.policy import Policy, load_policy

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per call")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--reader", default=None, nargs="?", const="shipped",
                        help="also time the fine-tuned request reader (a model folder, default "
                             "the shipped one)")
    parser.add_argument("--relevance", action="store_true",
                        help="also time the relevance generator on the fp32 encoder")
    args = parser.parse_args()
    load_start = round(os.getloadavg()[0], 2)

    bank = PrincipleBank.load()
    stakes = StakesModel.load()
    policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    judge_ids = list(policy.values)

    def int8() -> Int8Embedder:
        return Int8Embedder(cache_size=100_000, threads=args.threads)

    gate_only = VilmoGenerator(bank, int8(), stakes)
    look = SecondLook(BuiltinClassifier())
    unchecked = VilmoGenerator(bank, int8(), stakes, second_look=look)
    checked_judge = BuiltinClassifier()
    checked = VilmoGenerator(bank, int8(), stakes, second_look=SecondLook(checked_judge))
    int8_alone = int8()

    def ask(generator: VilmoGenerator | RelevanceGenerator, chosen: Policy) -> Callable[[str], object]:
        return lambda p: generator.generate([{"role": "user", "content": p}], chosen)

    arms: dict[str, Callable[[str], object]] = {
        "main (gate only)": ask(gate_only, policy),
        "second look, input not checked": ask(unchecked, policy),
        "second look, input checked": ask(checked, policy),
        "int8-embedding-only": lambda p: int8_alone.encode([p]),
    }
    if args.reader is not None:
        from vilmo.instruct.stakes_reader import StakesReader

        def reader() -> StakesReader:
            return StakesReader(None if args.reader == "shipped" else args.reader,
                                cache_size=100_000, threads=args.threads)

        one = reader()
        arms["reader (gate only)"] = ask(VilmoGenerator(bank, one, stakes), policy)
        two = reader()
        arms["reader + second look, input not checked"] = ask(VilmoGenerator(
            bank, two, stakes, second_look=SecondLook(BuiltinClassifier())), policy)
        three = reader()
        arms["reader + second look, input checked"] = ask(VilmoGenerator(
            bank, three, stakes, second_look=SecondLook(checked_judge)), policy)
        alone = reader()
        arms["reader-graph-only"] = lambda p: alone.rows([p])
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
    looked = looked_reader = 0
    for n, prompt in enumerate(prompts):
        checked_judge.score([ScoreInput(prompt)], judge_ids)  # the input check, not timed
        order = list(arms) if n % 2 == 0 else list(reversed(arms))  # alternate the order
        for name in order:
            started, started_cpu = time.perf_counter(), time.process_time()
            arms[name](prompt)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
        vector = int8_alone.encode([prompt])[0]
        looked += look.wanted(stakes.at_stake_probability(vector), stakes.threshold)
        if args.reader is not None:
            looked_reader += look.wanted(alone.read(prompt).gate, alone.threshold)
    cached = []
    for prompt in prompts:
        started = time.perf_counter()
        arms["second look, input not checked"](prompt)
        cached.append(time.perf_counter() - started)
    result: dict[str, object] = {
        "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "onnx_threads": args.threads,
        "prompts": len(prompts), "second_look_share": round(looked / max(len(prompts), 1), 3),
        "reader_second_look_share": round(looked_reader / max(len(prompts), 1), 3),
        "load_average_1min_start": load_start,
    }
    for name in arms:
        result[name] = {"wall": summary(wall[name]), "cpu": summary(cpu[name])}
    result["after-cached"] = {"wall": summary(cached)}
    base = statistics.median(wall["main (gate only)"])
    result["ratio_p50_wall_over_main"] = {
        name: round(statistics.median(wall[name]) / base, 2) for name in arms}
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
