"""What the distress detector (`vilmo/instruct/distress.py`) costs the instruction step: the
step (`VilmoGenerator.choose`, `default`, the shipped reader without caches, no second look so
that only the detector differs) on the dev benign prompts (HH first turns and everyday
questions), with and without the detector, interleaved per prompt and round, one prompt per
call. Prints the medians and means per prompt (each prompt's fastest round), the ratio of
the means, the share of prompts whose embedding half ran and the extra time per prompt on
each side of the prefilter. Timings are ratios within one run (2 shared cores).

    VILMO_DATA_DIR=../shared/data .venv/bin/python bench/bench_distress.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    from vilmo.datasets.readers import data_dir
    from vilmo.instruct.generator import VilmoGenerator
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.instruct.stakes import StakesModel
    from vilmo.instruct.stakes_reader import StakesReader
    from vilmo.policy import load_policy
    from vilmo.train.stakes_data import BENIGN, EVERYDAY, stakes_prompts

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    texts = [r.text for r in stakes_prompts(data_dir())
             if r.source in (BENIGN, EVERYDAY) and r.split == "dev"]
    policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    steps = {}
    for name, distress in (("without", None), ("with", True)):
        steps[name] = VilmoGenerator(PrincipleBank.load(),
                                     StakesReader(None, cache_size=0, batch_size=1, threads=1),
                                     StakesModel.load(),
                                     distress=distress)
        steps[name].prepare(policy)
        for text in texts[:20]:  # warm-up: sessions, tokenizer
            steps[name].choose(text, policy)
    detector, with_reader = steps["with"].distress, steps["with"].reader
    assert detector is not None and with_reader is not None
    passed = [detector.looks_distressed(r.gate, r.probabilities)
              for r in (with_reader.read(t) for t in texts)]
    times: dict[str, list[list[float]]] = {"without": [[] for _ in texts],
                                           "with": [[] for _ in texts]}
    for round_ in range(args.rounds):
        for i, text in enumerate(texts):
            for name in (("without", "with") if (i + round_) % 2 else ("with", "without")):
                started = time.perf_counter()
                steps[name].choose(text, policy)
                times[name][i].append(time.perf_counter() - started)
    best = {k: np.array([min(v) for v in rows]) for k, rows in times.items()}
    """Per prompt, its fastest round (the least disturbed by other jobs)."""
    mask = np.array(passed)

    def ms(values: np.ndarray) -> dict[str, float]:
        return {"median": round(1e3 * float(np.median(values)), 3),
                "mean": round(1e3 * float(np.mean(values)), 3)}

    report = {"prompts": len(texts), "rounds": args.rounds,
              "cpu": platform.processor() or platform.machine(),
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "without_ms": ms(best["without"]), "with_ms": ms(best["with"]),
              "ratio_of_means": round(float(best["with"].mean() / best["without"].mean()), 3),
              "embedding_half_share": round(float(mask.mean()), 3),
              "extra_ms_prefilter_passed": ms(best["with"][mask] - best["without"][mask]),
              "extra_ms_prefilter_not_passed": ms(best["with"][~mask] - best["without"][~mask])}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
