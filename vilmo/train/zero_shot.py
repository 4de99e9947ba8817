"""Calibration and held-out measurement of the zero-shot principle judge.

Tasks come from FULCRA: for each Schwartz value with enough replies going against it, a
principle is the value's definition with eight violating and eight acceptable example replies
from the train split; the replies of another split are scored and labelled by whether they go
against the value. The map is fitted on the dev split; the held-out split only measures it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.datasets import readers as data
from vilmo.evaluation.metrics import bootstrap_ci, fit_platt, roc_auc
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.embedder import TextEncoder
from vilmo.judge.zero_shot import (
    PrincipleSpec,
    ZeroShotCalibration,
    ZeroShotClassifier,
    calibration_path,
)
from vilmo.numeric import sigmoid
from vilmo.values import VALUES

EXAMPLES = 8


def principles(root: Path, seed: int = 13) -> list[PrincipleSpec]:
    """One principle per Schwartz value with at least EXAMPLES train replies against it."""
    rng = random.Random(seed)
    train = data.fulcra(root, "train")
    out = []
    for vid in sorted({v for r in train for v in r.values}):
        bad = [r.response for r in train if r.values.get(vid) == -1]
        good = [r.response for r in train if r.values.get(vid) == 1]
        if len(bad) >= EXAMPLES and len(good) >= EXAMPLES:
            out.append(PrincipleSpec(vid, VALUES[vid].definition,
                                     tuple(rng.sample(bad, EXAMPLES)),
                                     tuple(rng.sample(good, EXAMPLES))))
    return out


def margins(root: Path, split: data.Split, encoder: TextEncoder | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Margins and labels of every (principle, reply) pair of the split."""
    rows = data.fulcra(root, split)
    items = [ScoreInput(r.response, r.prompt) for r in rows]
    xs, ys = [], []
    for spec in principles(root):
        clf = ZeroShotClassifier([spec], encoder, ZeroShotCalibration())
        xs.append(clf.margins(items, spec.id))
        ys.append(np.array([float(r.values.get(spec.id) == -1) for r in rows]))
    return np.concatenate(xs), np.concatenate(ys)


def fit(root: Path, encoder: TextEncoder | None = None, out: Path | None = None
        ) -> dict[str, Any]:
    """Fit on dev, measure on held-out, write ``vilmo/models/zero_shot.json``."""
    dev_x, dev_y = margins(root, "dev", encoder)
    slope, offset = fit_platt(dev_x, dev_y)
    test_x, test_y = margins(root, "heldout", encoder)
    p = sigmoid(slope * test_x + offset)
    idx = np.arange(len(test_y))
    result: dict[str, Any] = {
        "slope": slope, "offset": offset,
        "fitted_on": "FULCRA dev replies vs principles from FULCRA train replies",
        "heldout_auc": roc_auc(test_x, test_y),
        "heldout_auc_ci95": bootstrap_ci(lambda i: roc_auc(test_x[i], test_y[i]), len(idx)),
        "heldout_pairs": len(test_y), "heldout_positives": int(test_y.sum()),
        "heldout_flagged_at_0.5": float((p >= 0.5).mean()),
        "heldout_precision_at_0.5": float(test_y[p >= 0.5].mean()) if (p >= 0.5).any() else None,
        "heldout_recall_at_0.5": float((p[test_y > 0] >= 0.5).mean()) if test_y.any() else None,
    }
    path = out or calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
