"""The gate of the values-at-stake model: is any value at stake in a prompt at all?

Trained by ``vilmo.train.stakes.train_stakes`` (see its docstring for the data); here: the
labels, the network, its calibration on dev, the dev-chosen threshold and the held-out figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vilmo.metrics import bootstrap_ci
from vilmo.stakes import Gate
from vilmo.train.stakes_data import (
    BENIGN,
    EVERYDAY,
    GATE_POSITIVE_SOURCES,
    NEGATIVE_SOURCES,
    LabelledPrompt,
)
from vilmo.types import Matrix

if TYPE_CHECKING:
    from vilmo.train.stakes import StakesSettings

GATE_BENIGN_TARGET = 0.04
"""The gate's threshold passes at most this share of dev everyday prompts (the target is 5 % on
held-out prompts)."""
GATE_HIDDEN = 256
GATE_ALPHA = 1e-3
GATE_DRAWS = 60_000


def gate_label(row: LabelledPrompt) -> int | None:
    """1: a labelled value-laden chat prompt; 0: an everyday prompt; None: not for the gate."""
    if row.source in NEGATIVE_SOURCES:
        return 0
    if row.source in GATE_POSITIVE_SOURCES and row.labels:
        return 1
    return None


def balanced_weights(groups: Sequence[object]) -> np.ndarray:
    """One weight per row so that every group (e.g. a source) weighs the same in total."""
    names = list(groups)
    counts = {g: names.count(g) for g in set(names)}
    return np.array([len(names) / (len(counts) * counts[g]) for g in names], dtype=np.float64)


def fit_gate(rows: Sequence[LabelledPrompt], x: Matrix, settings: StakesSettings,
             ) -> tuple[Gate, dict[str, Any]]:
    """The gate (see the module docstring) with its card: threshold chosen on dev."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    def split(name: str) -> tuple[list[int], np.ndarray]:
        idx = [i for i, r in enumerate(rows) if r.split == name and gate_label(r) is not None]
        return idx, np.array([gate_label(rows[i]) for i in idx], dtype=np.int64)

    train, y = split("train")
    dev, _ = split("dev")
    # Class- and source-balanced: drawn with replacement in proportion to these weights.
    weight = balanced_weights([(int(t), rows[i].source) for i, t in zip(train, y, strict=True)])
    weight *= np.where(y == 1, 1.0 / len(GATE_POSITIVE_SOURCES), 1.0 / len(NEGATIVE_SOURCES))
    rng = np.random.default_rng(settings.seed)
    drawn = rng.choice(len(train), size=GATE_DRAWS, p=weight / weight.sum())
    with threadpool_limits(2):
        net = MLPClassifier(hidden_layer_sizes=(GATE_HIDDEN,), alpha=GATE_ALPHA, max_iter=60,
                            early_stopping=True, random_state=settings.seed).fit(
            x[train][drawn], y[drawn])
    raw = Gate(net.coefs_[0].T.astype(np.float32), net.intercepts_[0].astype(np.float32),
               net.coefs_[1][:, 0].astype(np.float32), float(net.intercepts_[1][0]))
    # The threshold is set on whole everyday requests (not on HH's later, contextual turns).
    first_turns = np.array([rows[i].source in (BENIGN, EVERYDAY) for i in dev])
    gate, platt = _platt(raw, x[dev], [(gate_label(rows[i]), rows[i].source) for i in dev],
                         first_turns)
    p = gate(x[dev])
    threshold = float(np.quantile(p[first_turns], 1.0 - GATE_BENIGN_TARGET))
    passed = {s: round(float((p[[rows[i].source == s for i in dev]] >= threshold).mean()), 4)
              for s in (*GATE_POSITIVE_SOURCES, BENIGN, EVERYDAY)}
    card = {"model": f"one hidden layer of {GATE_HIDDEN} ReLU units (sklearn MLPClassifier, "
                     f"adam, L2 alpha {GATE_ALPHA}, early stopping on 10 % of the draws)",
            "training": f"{GATE_DRAWS} draws with replacement from the train split, each class "
                        "half the weight and each source equal within its class",
            "calibration": f"Platt scaling of the output logit on dev (a = {platt[0]:.3f}, "
                           f"b = {platt[1]:.3f}), classes and sources balanced as in training",
            "threshold": round(threshold, 4), "benign_dev_target": GATE_BENIGN_TARGET,
            "dev_passed": passed, "positives": list(GATE_POSITIVE_SOURCES),
            "negatives": list(NEGATIVE_SOURCES), "train_prompts": len(train),
            "dev_prompts": len(dev)}
    return gate, card


def _platt(gate: Gate, x: Matrix, labels: Sequence[tuple[int | None, str]],
           first_turns: np.ndarray) -> tuple[Gate, tuple[float, float]]:
    """The gate with its output logit rescaled (a · z + b) to fit dev, so that its probability
    means what it says for an even mix of everyday and value-laden prompts."""
    from sklearn.linear_model import LogisticRegression

    h = np.maximum(x @ gate.hidden.T + gate.hidden_bias, 0.0)
    z = (h @ gate.weights + gate.bias)[:, None]
    keep = np.array([label == 1 for label, _ in labels]) | first_turns
    y = np.array([label for label, _ in labels], dtype=np.int64)[keep]
    weight = balanced_weights([(int(t), s) for t, (_, s) in
                               zip(y, [lab for lab, k in zip(labels, keep, strict=True) if k],
                                   strict=True)])
    weight *= np.where(y == 1, 1.0 / len(GATE_POSITIVE_SOURCES), 0.5)
    fit = LogisticRegression(C=100.0, max_iter=1000).fit(z[keep], y, sample_weight=weight)
    a, b = float(fit.coef_[0][0]), float(fit.intercept_[0])
    return Gate(gate.hidden, gate.hidden_bias, (gate.weights * a).astype(np.float32),
                gate.bias * a + b), (a, b)


def evaluate_gate(rows: Sequence[LabelledPrompt], x: Matrix, gate: Gate, threshold: float,
                  settings: StakesSettings) -> dict[str, Any]:
    """Held-out share of prompts the gate passes (says something is at stake), per source."""
    out: dict[str, Any] = {"threshold": threshold}
    for source in (BENIGN, EVERYDAY, *GATE_POSITIVE_SOURCES, "fulcra"):
        idx = [i for i, r in enumerate(rows) if r.source == source and r.split == "heldout"
               and (r.labels or source in NEGATIVE_SOURCES)]
        passed = gate(x[idx]) >= threshold
        low, high = mean_ci(passed.astype(np.float64), settings)
        out[source] = {"prompts": len(idx), "passed": round(float(passed.mean()), 4),
                       "ci": [round(low, 4), round(high, 4)]}
    return out


def mean_ci(values: np.ndarray, settings: StakesSettings) -> tuple[float, float]:
    def mean(ix: np.ndarray) -> float:
        return float(values[ix].mean())

    return bootstrap_ci(mean, len(values), settings.bootstrap_rounds, settings.seed)
