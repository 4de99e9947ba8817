"""Train the distress detector (``vilmo/instruct/distress.py``) and choose its thresholds.

Two logistic regressions on what the instruction step already reads: a prefilter on the
request reader's 30 outputs (its gate and value logits, read for every prompt) and the detector
on the prompt's plain embedding (computed by the reader's second half, which the prefilter
lets run for few prompts that nothing else puts at stake). Positives: the written
self-harm rows of ``vilmo/data/prompts/distress_train.jsonl``; negatives: its benign look-alikes,
the train HH first and later turns, the train everyday questions and the written benign
requests (each class weighs half). Both are read through the served int8 graph, one prompt per
call. Chosen without held-out rows: the prefilter keeps ``PREFILTER_KEEP`` of the positives'
out-of-fold scores (train); the detector's C gives the most out-of-fold positives with at most
``MAX_LOOKALIKES`` of the look-alikes firing (train); its threshold lets at most
``MAX_DEV_BENIGN`` dev benign prompts (HH first turns and everyday questions) through both.

    VILMO_DATA_DIR=../shared/data .venv/bin/python -m vilmo.train.stakes_distress
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.instruct.distress import DistressDetector, default_distress_path, reader_features
from vilmo.train.stakes_data import (
    BENIGN,
    BENIGN_LATER,
    EVERYDAY,
    _package_jsonl,
    extra_request_prompts,
    stakes_prompts,
)

SEED = 13
PREFILTER_C = 0.1
PREFILTER_KEEP = 0.98
"""Share of the positives' out-of-fold prefilter scores kept (the cost: how many prompts need
the embedding half)."""
DETECTOR_CS = (0.1, 1.0, 10.0)
MAX_LOOKALIKES = 0.10
MAX_DEV_BENIGN = 1
"""Dev benign prompts the detector may fire on (1 of 241: +0.4 point at most)."""


def _texts(root: Path) -> dict[str, list[str]]:
    rows = stakes_prompts(root)
    sets = {name: [r.text for r in rows if r.source == source and r.split == split]
            for name, source, split in (("hh_train", BENIGN, "train"),
                                        ("hh_later_train", BENIGN_LATER, "train"),
                                        ("everyday_train", EVERYDAY, "train"),
                                        ("hh_dev", BENIGN, "dev"),
                                        ("everyday_dev", EVERYDAY, "dev"))}
    sets["written_benign"] = [r.text for r in extra_request_prompts(root)
                              if r.source == "written-benign"]
    distress = _package_jsonl("distress_train.jsonl")
    sets["distress"] = [str(d["prompt"]) for d in distress if d["harm"]]
    sets["lookalikes"] = [str(d["prompt"]) for d in distress if not d["harm"]]
    return {k: list(dict.fromkeys(v)) for k, v in sets.items()}


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    weight = np.where(y == 1, 0.5 / max(1, int(y.sum())), 0.5 / max(1, int((1 - y).sum())))
    model = LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=weight * len(y))
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def _out_of_fold(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    out = np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=SEED).split(x, y):
        w, b = _fit(x[train], y[train], c)
        out[test] = x[test] @ w + b
    return out


def train(root: Path, out: Path) -> dict[str, Any]:
    """Fit, choose, write ``out`` (JSON: weights, thresholds, the card's figures)."""
    from vilmo.instruct.stakes_reader import StakesReader

    started = time.perf_counter()
    sets = _texts(root)
    reader = StakesReader(None, cache_size=0, batch_size=1, threads=2)
    heads: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}
    for name, texts in sets.items():
        readings = [reader.read(t) for t in texts]
        heads[name] = np.array([reader_features(r.gate, r.probabilities)
                                for r in readings])
        vectors[name] = np.array([r.vector for r in readings], dtype=np.float64)
    negatives = ("hh_train", "hh_later_train", "everyday_train", "written_benign", "lookalikes")
    y = np.r_[np.ones(len(sets["distress"])), np.zeros(sum(len(sets[k]) for k in negatives))]
    n_pos, n_look = len(sets["distress"]), len(sets["lookalikes"])

    def stack(parts: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([parts["distress"], *(parts[k] for k in negatives)])

    pre_x = stack(heads)
    pre_w, pre_b = _fit(pre_x, y, PREFILTER_C)
    pre_oof = _out_of_fold(pre_x, y, PREFILTER_C)
    pre_threshold = float(np.quantile(pre_oof[:n_pos], 1.0 - PREFILTER_KEEP))
    dev_benign_heads = np.concatenate([heads["hh_dev"], heads["everyday_dev"]])
    dev_benign_vectors = np.concatenate([vectors["hh_dev"], vectors["everyday_dev"]])
    dev_pre = dev_benign_heads @ pre_w + pre_b >= pre_threshold
    vec_x = stack(vectors)
    look = slice(len(y) - n_look, len(y))  # the look-alikes are the last negatives
    tried: list[dict[str, Any]] = []
    for c in DETECTOR_CS:
        w, b = _fit(vec_x, y, c)
        dev_scores = np.sort(np.where(dev_pre, dev_benign_vectors @ w + b, -np.inf))[::-1]
        # Just above the (N+1)-th highest (by 5 % of its gap to the N-th, against rounding):
        # at most N fire, and the most positives below the N-th.
        above = dev_scores[MAX_DEV_BENIGN - 1] if MAX_DEV_BENIGN > 0 else dev_scores[0] + 1.0
        threshold = float(dev_scores[MAX_DEV_BENIGN] + 0.05 * (above - dev_scores[MAX_DEV_BENIGN]))
        oof = _out_of_fold(vec_x, y, c)
        fired = (oof > threshold) & (pre_oof >= pre_threshold)
        tried.append({"C": c, "weights": w, "bias": b, "threshold": threshold,
                      "oof_distress": float(fired[:n_pos].mean()),
                      "oof_lookalikes": float(fired[look].mean())})
    allowed = [t for t in tried if t["oof_lookalikes"] <= MAX_LOOKALIKES] or tried
    best = max(allowed, key=lambda t: (t["oof_distress"], -t["oof_lookalikes"]))
    dev_fired = int((dev_pre & (dev_benign_vectors @ best["weights"] + best["bias"]
                                > best["threshold"])).sum())
    card = {
        "kind": "distress detector",
        "command": "VILMO_DATA_DIR=../shared/data .venv/bin/python -m vilmo.train.stakes_distress",
        "reader_threshold": reader.threshold,
        "data": {k: len(v) for k, v in sets.items()},
        "prefilter": {"features": "the logits of the reader's gate (after Platt scaling) and 29 value probabilities",
                      "C": PREFILTER_C, "keep": PREFILTER_KEEP, "threshold": pre_threshold,
                      "dev_benign_passed": float(dev_pre.mean())},
        "detector": {"features": "plain embedding (384)", "C": best["C"],
                     "threshold": best["threshold"], "dev_benign_fired": dev_fired,
                     "dev_benign": len(dev_pre)},
        "selection": [{k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in t.items() if k not in ("weights", "bias")} for t in tried],
        "seconds": round(time.perf_counter() - started, 1),
    }
    detector = DistressDetector(pre_w, pre_b, pre_threshold, best["weights"], best["bias"],
                                best["threshold"], card)
    detector.save(out)
    return card


def main() -> None:
    from vilmo.datasets.readers import data_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=default_distress_path())
    args = parser.parse_args()
    print(json.dumps(train(data_dir(), args.out), indent=1))


if __name__ == "__main__":
    main()
