"""How the request reader's threshold and the judge's second look (`vilmo.instruct.second_look`)
are chosen: on dev prompts only (a selection, not a test).

For every dev prompt of the instruction evaluation's sets (HH helpful first turns and everyday
questions: benign; SafeRLHF questions with a harm label; moral-story prompts): the request
reader's gate probability (its int8 graph, one prompt per call, as served) and the built-in
judge's reading of the prompt as a plain user text: the highest over the policy's values
(weight > 0) of its composed violation probabilities BEFORE the operating-point rescaling
(`BuiltinClassifier.score(..., calibrated=False)`), so the choice does not move when the judge's
operating points are refitted. Then over a grid of
- the reader's threshold: the `1 - q` quantile of the gate on dev benign prompts, q in `--benign`,
- the band start `gate_from` (0.0 to 0.7) and the judge threshold (0.05 to 0.9),
the rule "inject when the gate passes, or the gate is in [gate_from, threshold) and the judge's
reading reaches judge_threshold" is scored on dev. The rule fixed before looking: the most dev
SafeRLHF questions passed among the points with dev benign at most `--max-benign`, dev stories
at least `--min-moral`, and at most `--max-band` of dev benign prompts sent to the judge (its
extra pass when input is not checked); ties: the smaller band. Also prints the trade-off curve
(best SafeRLHF share per number of dev benign prompts passed, gate alone and with the judge).
Prints JSON.

    VILMO_DATA_DIR=../shared/data .venv/bin/python bench/select_second_look.py [--reader DIR]
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
    from vilmo.instruct.stakes_reader import StakesReader
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.policy import load_policy
    from vilmo.train.stakes_data import stakes_prompts

    parser = argparse.ArgumentParser()
    parser.add_argument("--policy", default="default")
    parser.add_argument("--reader", default=None, help="the reader's folder (default: shipped)")
    parser.add_argument("--benign", type=float, nargs="+", default=[0.04, 0.045],
                        help="shares of dev benign prompts the reader's threshold passes")
    parser.add_argument("--max-benign", type=float, default=11 / 241,
                        help="most dev benign prompts the rule may pass (default: 11 of 241, "
                             "what the rule shipped before passed)")
    parser.add_argument("--min-moral", type=float, default=0.9)
    parser.add_argument("--max-band", type=float, default=0.10,
                        help="most of the dev benign prompts the judge may be asked about")
    args = parser.parse_args()

    policy = load_policy(REPO / "vilmo" / "policies" / f"{args.policy}.yaml")
    ids = [v for v in policy.values if policy.weight_of(v) > 0.0]
    rows = [r for r in stakes_prompts(data_dir()) if r.split == "dev" and (
        r.source in ("hh", "everyday") or (r.source in ("saferlhf", "moral-stories")
                                           and r.labels))]
    reader = StakesReader(args.reader, cache_size=0, batch_size=1, threads=2)
    judge = BuiltinClassifier()
    gate = np.array([reader.read(r.text).gate for r in rows])
    scores = np.array([max(judge.score([ScoreInput(r.text)], ids, calibrated=False)[0]
                           .violation.values()) for r in rows])
    source = np.array([r.source for r in rows])
    kinds = {"benign": np.isin(source, ["hh", "everyday"]), "harmful": source == "saferlhf",
             "moral": source == "moral-stories"}

    def rates(injected: np.ndarray) -> dict[str, float]:
        return {k: round(float(injected[m].mean()), 4) for k, m in kinds.items()}

    grid: list[dict[str, Any]] = []
    for q in args.benign:
        threshold = float(np.quantile(gate[kinds["benign"]], 1.0 - q))
        grid.append({"benign_quantile": q, "threshold": round(threshold, 4), "gate_from": None,
                     "judge_threshold": None, **rates(gate >= threshold), "band_benign": 0.0})
        for gate_from in np.round(np.arange(0.0, 0.75, 0.1), 2):
            band = (gate >= gate_from) & (gate < threshold)
            for judge_threshold in np.round(np.arange(0.05, 0.91, 0.05), 2):
                injected = (gate >= threshold) | (band & (scores >= judge_threshold))
                grid.append({"benign_quantile": q, "threshold": round(threshold, 4),
                             "gate_from": float(gate_from),
                             "judge_threshold": float(judge_threshold), **rates(injected),
                             "band_benign": round(float(band[kinds["benign"]].mean()), 4),
                             "band_harmful": round(float(band[kinds["harmful"]].mean()), 4)})
    allowed = [g for g in grid if g["benign"] <= args.max_benign + 1e-9
               and g["moral"] >= args.min_moral and g["band_benign"] <= args.max_band]
    chosen = max(allowed, key=lambda g: (g["harmful"], -g["band_benign"]), default=None)
    print(json.dumps({"policy": args.policy, "reader": str(reader.model_dir),
                      "dev_prompts": {k: int(m.sum()) for k, m in kinds.items()},
                      "judge_reading": "max over the policy's values, before operating points",
                      "chosen": chosen,
                      "best_five": sorted(allowed, key=lambda g: (-g["harmful"],
                                                                  g["band_benign"]))[:5],
                      "trade_off": trade_off(gate, scores, kinds)}, indent=1))


def trade_off(gate: np.ndarray, scores: np.ndarray, kinds: dict[str, np.ndarray],
              most: int = 60) -> list[dict[str, Any]]:
    """Per number of dev benign prompts passed (up to ``most``): the SafeRLHF share of the gate
    alone at that count, and the best over the judge's grid (an optimistic envelope: each
    point is chosen on the same prompts it is scored on)."""
    benign = np.sort(gate[kinds["benign"]])[::-1]
    alone: dict[int, float] = {}
    joint: dict[int, float] = {}
    for k in range(min(most, len(benign))):
        threshold = benign[k] + 1e-7
        passed = gate >= threshold
        alone[int(passed[kinds["benign"]].sum())] = float(passed[kinds["harmful"]].mean())
        for gate_from in np.arange(0.0, 0.75, 0.1):
            for judge_threshold in np.arange(0.05, 0.91, 0.05):
                injected = passed | ((gate >= gate_from) & (scores >= judge_threshold))
                if injected[kinds["moral"]].mean() < 0.9:
                    continue
                n = int(injected[kinds["benign"]].sum())
                joint[n] = max(joint.get(n, 0.0), float(injected[kinds["harmful"]].mean()))
    n_benign = int(kinds["benign"].sum())
    return [{"benign_passed": n, "benign": round(n / n_benign, 4),
             "harmful_gate_alone": round(alone[n], 4) if n in alone else None,
             "harmful_with_judge": round(joint[n], 4)} for n in sorted(joint) if n <= most]


if __name__ == "__main__":
    main()
