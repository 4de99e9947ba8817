"""How the second look's band and threshold (`vilmo.instruct.second_look`) were chosen: on dev
prompts only (a selection, not a test).

For every dev prompt of the instruction evaluation's sets (HH helpful first turns and everyday
questions: benign; SafeRLHF questions with a harm label; moral-story prompts), the shipped gate's
probability (int8 encoder, one prompt per call) and the built-in judge's highest violation score
over a policy's values (default: `default`) on the prompt as a plain user text. Then over a grid
of `gate_from` x `judge_threshold`, with the gate's own threshold unchanged, the rule "inject when
the gate passes, or when the gate is in [gate_from, threshold) and the judge's score reaches
judge_threshold" is scored on dev; the chosen pair passes the most SafeRLHF questions among those
that pass no more benign prompts than the gate alone, no fewer moral stories, and send at most
`--max-band` of the benign prompts to the judge (its extra pass when input is not checked).
Ties: the smaller band. Prints JSON.

    VILMO_DATA_DIR=../shared/data .venv/bin/python bench/select_second_look.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    from vilmo.datasets.readers import data_dir
    from vilmo.instruct.stakes import StakesModel
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.embedder import Int8Embedder
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.policy import load_policy
    from vilmo.train.stakes_data import stakes_prompts

    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default="default")
    parser.add_argument("--max-band", type=float, default=0.10,
                        help="most of the dev benign prompts the judge may be asked about")
    args = parser.parse_args()

    policy = load_policy(REPO / "vilmo" / "policies" / f"{args.policy}.yaml")
    ids = [v for v in policy.values if policy.weight_of(v) > 0.0]
    rows = [r for r in stakes_prompts(data_dir()) if r.split == "dev" and (
        r.source in ("hh", "everyday") or (r.source in ("saferlhf", "moral-stories")
                                           and r.labels))]
    encoder, judge, stakes = Int8Embedder(batch_size=1), BuiltinClassifier(), StakesModel.load()
    gate = np.array([stakes.at_stake_probability(encoder.encode([r.text])[0]) for r in rows])
    scores = np.array([max(judge.score([ScoreInput(r.text)], ids)[0].violation.values())
                       for r in rows])
    source = np.array([r.source for r in rows])
    kinds = {"benign": np.isin(source, ["hh", "everyday"]), "harmful": source == "saferlhf",
             "moral": source == "moral-stories"}
    threshold = stakes.threshold
    alone = {k: round(float((gate[m] >= threshold).mean()), 4) for k, m in kinds.items()}
    grid: list[dict[str, Any]] = []
    for gate_from in np.round(np.arange(0.1, 0.75, 0.1), 2):
        band = (gate >= gate_from) & (gate < threshold)
        for judge_threshold in np.round(np.arange(0.1, 0.9, 0.025), 3):
            injected = (gate >= threshold) | (band & (scores >= judge_threshold))
            grid.append({"gate_from": float(gate_from), "judge_threshold": float(judge_threshold),
                         **{k: round(float(injected[m].mean()), 4) for k, m in kinds.items()},
                         "band_benign": round(float(band[kinds["benign"]].mean()), 4),
                         "band_harmful": round(float(band[kinds["harmful"]].mean()), 4)})
    allowed = [g for g in grid if g["benign"] <= alone["benign"] and g["moral"] >= alone["moral"]
               and g["band_benign"] <= args.max_band]
    chosen = max(allowed, key=lambda g: (g["harmful"], -g["band_benign"]), default=None)
    print(json.dumps({"policy": args.policy, "dev_prompts": {k: int(m.sum())
                                                             for k, m in kinds.items()},
                      "gate_threshold": threshold, "gate_alone": alone, "chosen": chosen,
                      "best_five": sorted(allowed, key=lambda g: (-g["harmful"],
                                                                  g["band_benign"]))[:5]},
                     indent=1))


if __name__ == "__main__":
    main()
