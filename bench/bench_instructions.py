"""The instruction step's cost per request, today's generator against the stake-aware one, in the
same run (a benchmark, not a test).

- `before`: what the shipped policies ran until this change: the relevance generator on the
  fp32 PyTorch sentence encoder (sentence-transformers, torch's default threads) under the old
  `default` policy (generator `relevance`).
- `after`: the shipped `default` policy now: the stake-aware VILMO generator on the int8 ONNX
  encoder (`Int8Embedder`, 1 thread per call as in the gateway; `--threads` to change).
- `after-cached`: the same prompts again (the generator's and the encoder's caches).
- `int8-embedding-only` and `fp32-embedding-only`: one fresh prompt's embedding through each
  encoder alone (separate instances), so the rest of each arm is its generator's own work.

Each prompt is new to both arms (no cache hides the embedding); the arms alternate prompt by
prompt so that load from other processes falls on both. Mixed prompts: SafeRLHF test questions
and HH helpful first turns (or built-in ones without the data folder). Prints the CPU, medians
and 95th percentiles in milliseconds, and the ratio before / after.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_instructions.py [--prompts 300]
"""

from __future__ import annotations

import argparse
import json
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
    from vilmo.instruct.stakes import StakesModel
    from vilmo.judge.embedder import Embedder, Int8Embedder
    from vilmo.policy import Policy, load_policy

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per call")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    bank = PrincipleBank.load()
    after_policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    before_policy = Policy.model_validate(after_policy.model_dump() | {
        "instructions": {"generator": "relevance", "placement": "system",
                         "max_principles": 3, "style": "imperative"}})
    before = RelevanceGenerator(bank, Embedder(cache_size=100_000))
    after = VilmoGenerator(bank, Int8Embedder(cache_size=100_000, threads=args.threads),
                           StakesModel.load())
    int8_alone = Int8Embedder(cache_size=100_000, threads=args.threads)
    fp32_alone = Embedder(cache_size=100_000)
    arms: dict[str, Callable[[str], object]] = {
        "before": lambda p: before.generate([{"role": "user", "content": p}], before_policy),
        "after": lambda p: after.generate([{"role": "user", "content": p}], after_policy),
        "int8-embedding-only": lambda p: int8_alone.encode([p]),
        "fp32-embedding-only": lambda p: fp32_alone.encode([p]),
    }
    for i in range(args.warmup):
        for fn in arms.values():
            fn(f"warm-up prompt number {i}: how do I fix my bike?")
    prompts = load_prompts(args.prompts)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for n, prompt in enumerate(prompts):
        order = list(arms) if n % 2 == 0 else list(reversed(arms))  # alternate the order
        for name in order:
            started = time.perf_counter()
            arms[name](prompt)
            times[name].append(time.perf_counter() - started)
    cached = []
    for prompt in prompts:
        started = time.perf_counter()
        arms["after"](prompt)
        cached.append(time.perf_counter() - started)
    result = {
        "cpu": cpu_model(), "cores": len(__import__("os").sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "onnx_threads": args.threads,
        "prompts": len(prompts),
        "before (relevance, fp32 torch)": summary(times["before"]),
        "after (stake-aware vilmo, int8 onnx)": summary(times["after"]),
        "after-cached": summary(cached),
        "int8-embedding-only": summary(times["int8-embedding-only"]),
        "fp32-embedding-only": summary(times["fp32-embedding-only"]),
        "load_average_1min": round(__import__("os").getloadavg()[0], 2),
    }
    result["ratio_p50_before_over_after"] = round(
        result["before (relevance, fp32 torch)"]["p50"]
        / result["after (stake-aware vilmo, int8 onnx)"]["p50"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
