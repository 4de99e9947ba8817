"""Time the VILMO generator per prompt on CPU, beside the relevance generator (a benchmark, not a
test).

Every prompt is embedded once first (the request path embeds it once and shares the vector), so
the figures are the generators' own work: retrieval, values at stake, the scorer and composing.
Rows: `relevance` (RelevanceGenerator), `vilmo-prior` (shipped values-at-stake weights, no
per-target scorer), `vilmo-scorer` (plus a per-target scorer: ``--weights RUN_DIR``, else a
random scorer of the real shape, which costs the same), `vilmo-cached` (the same prompts again),
and, for scale, one fresh prompt's MiniLM embedding (paid once per request, shared).
Prints one JSON object of medians and 95th percentiles in milliseconds.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_generator.py [--prompts 300] [--weights DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

FALLBACK = ["How do I get back at my coworker?", "Can I read my partner's messages?",
            "What is the best way to cheat on a test?", "Tell me a joke about my neighbours."]


def load_prompts(n: int) -> list[str]:
    from vilmo.datasets.readers import DataMissing, data_dir, saferlhf

    try:
        found = [p for p, _ in saferlhf(data_dir(), "test")][:n]
    except DataMissing:
        found = []
    return found or [f"{p} ({i})" for i in range(n) for p in FALLBACK][:n]


def random_scorer(directory: Path) -> Path:
    from vilmo.instruct.scorer import InstructionScorer, Projection

    rng = np.random.default_rng(0)

    def proj(k: int) -> Projection:
        return Projection(np.zeros(384, np.float32), rng.standard_normal((384, k)).astype(
            np.float32), np.ones(k, np.float32))

    InstructionScorer(rng.standard_normal((46, 42)).astype(np.float32),
                      rng.standard_normal(4).astype(np.float32), 0.0, proj(16), proj(8)).save(
        directory)
    return directory


def timed(fn: Callable[[str], object], prompts: list[str]) -> dict[str, float]:
    times = []
    for p in prompts:
        start = time.perf_counter()
        fn(p)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 3),
            "p95_ms": round(float(np.percentile(times, 95)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from vilmo.instruct.generator import VilmoGenerator
    from vilmo.instruct.instructions import RelevanceGenerator
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.judge.embedder import Embedder
    from vilmo.policy import Policy
    from vilmo.values import VALUES

    encoder, bank = Embedder(cache_size=100_000), PrincipleBank.load()
    prompts = load_prompts(args.prompts)
    encoder.encode(prompts)  # embedded once, as the request path does
    weights = args.weights or str(random_scorer(Path(tempfile.mkdtemp())))
    values = {v: {"weight": 1.0} for v in VALUES}

    def policy(generator: str, w: str | None = None) -> Policy:
        return Policy.model_validate({"name": "bench", "values": values, "instructions": {
            "generator": generator, "weights": w}})

    relevance = RelevanceGenerator(bank, encoder)
    vilmo = VilmoGenerator(bank, encoder, cache_size=0)
    cached = VilmoGenerator(bank, encoder)
    p_rel, p_prior, p_scorer = policy("relevance"), policy("vilmo"), policy("vilmo", weights)
    for gen, pol in ((relevance, p_rel), (vilmo, p_prior), (vilmo, p_scorer)):
        gen.generate([{"role": "user", "content": "warm up"}], pol)  # type: ignore[attr-defined]

    def run(gen: object, pol: Policy) -> Callable[[str], object]:
        return lambda p: gen.generate([{"role": "user", "content": p}], pol)  # type: ignore[attr-defined]

    result = {"prompts": len(prompts), "values_in_policy": len(values),
              "principles": len(bank.principles), "threads": args.threads,
              "relevance": timed(run(relevance, p_rel), prompts),
              "vilmo-prior": timed(run(vilmo, p_prior), prompts),
              "vilmo-scorer": timed(run(vilmo, p_scorer), prompts)}
    result["embed-prompt (shared, for scale)"] = timed(
        lambda p: encoder.encode([f"{p} (fresh)"]), prompts[:100])
    timed(run(cached, p_scorer), prompts)
    result["vilmo-cached"] = timed(run(cached, p_scorer), prompts)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
