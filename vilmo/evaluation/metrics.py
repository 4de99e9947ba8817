"""Calibration and the held-out figures (pure numpy): Platt scaling, ROC-AUC, F1, 95 % CIs.

A row whose score or label is not finite (a missing score) is left out by ``fit_platt`` and
``roc_auc`` alike, as a reply that could not be scored is left out of the eval's means: NaN
sorted above every score made a confident AUC, and one NaN logit a NaN intercept for good.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import numpy.typing as npt

from vilmo.numeric import sigmoid as sigmoid  # noqa: PLC0414 (Platt scaling's link, re-exported)

Array = npt.NDArray[np.float64]


def finite_rows(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[Array, Array]:
    """``scores`` and ``labels`` as float arrays, without the rows where either is not finite."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def fit_platt(logits: npt.ArrayLike, labels: npt.ArrayLike, steps: int = 100,
              l2: float = 1e-2) -> tuple[float, float]:
    """(a, b) so that sigmoid(a * logit + b) is calibrated on this split (Newton, light L2).

    With one class only there is nothing to fit, and the identity (1, 0) is returned. A slope
    that comes out non-positive or huge (a handful of positives) would invert or saturate the
    head, so then only the intercept is fitted, with slope 1: the ranking is kept.
    """
    x, y = finite_rows(logits, labels)
    if len(x) == 0 or y.min() == y.max():
        return 1.0, 0.0
    # Platt's smoothed targets keep a few positives from yielding an infinite slope.
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    w = np.array([1.0, 0.0])
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(steps):
        p = sigmoid(design @ w)
        grad = design.T @ (p - t) + l2 * np.array([w[0] - 1.0, 0.0])
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(2)
        w = w - np.clip(np.linalg.solve(hess, grad), -5.0, 5.0)
    if np.all(np.isfinite(w)) and 0.0 < w[0] <= 50.0:
        return float(w[0]), float(w[1])
    b = 0.0
    for _ in range(steps):
        p = sigmoid(x + b)
        b -= float(np.clip((p - t).sum() / max(float((p * (1 - p)).sum()), 1e-9), -5.0, 5.0))
    return 1.0, b


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half); NaN with one class only."""
    s, kept = finite_rows(scores, labels)
    y = kept > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1(pred: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    p = np.asarray(pred) > 0.5
    y = np.asarray(labels) > 0.5
    tp = float((p & y).sum())
    denom = float(p.sum() + y.sum())
    return 2 * tp / denom if denom else 0.0


def macro_f1(pred: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean of per-column F1 (ValueEval's figure)."""
    p, y = np.asarray(pred), np.asarray(labels)
    return float(np.mean([f1(p[:, j], y[:, j]) for j in range(y.shape[1])]))


def best_f1_threshold(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """The probability threshold with the highest F1 on this (validation) split."""
    s, y = np.asarray(probs), np.asarray(labels)
    grid = np.linspace(0.05, 0.95, 91)
    scores = [f1(s >= t, y) for t in grid]
    return float(grid[int(np.argmax(scores))])


def shrunk_f1_thresholds(probs: npt.ArrayLike, labels: npt.ArrayLike) -> list[float]:
    """Per-column thresholds halfway between each column's best-F1 threshold and the single
    threshold with the best macro-F1: a column's own best is noisy on a small split."""
    p, y = np.asarray(probs), np.asarray(labels)
    own = np.array([best_f1_threshold(p[:, j], y[:, j]) for j in range(p.shape[1])])
    grid = np.linspace(0.05, 0.95, 91)
    shared = grid[int(np.argmax([macro_f1(p >= t, y) for t in grid]))]
    return [round(float(t), 4) for t in (own + shared) / 2]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval for a proportion."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def bootstrap_ci(stat: Callable[[npt.NDArray[np.int64]], float], n: int, rounds: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(indices)`` over resamples of n rows."""
    rng = np.random.default_rng(seed)
    return _percentiles([stat(rng.integers(0, n, n)) for _ in range(rounds)])


def cluster_bootstrap_ci(stat: Callable[[npt.NDArray[np.int64]], float],
                         groups: Sequence[Hashable], rounds: int = 1000,
                         seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(indices)`` over resamples of whole groups: as many
    groups as there are, drawn with replacement, their rows concatenated. ``groups[i]`` is
    row i's independent unit (the behaviour several replies answer, the story several
    continuations continue): resampling the rows of such a cluster as if independent makes
    the interval too narrow. With one row per group it is ``bootstrap_ci``, draw for draw."""
    members: dict[Hashable, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    rows = [np.asarray(m, dtype=np.int64) for m in members.values()]
    if not rows:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    return _percentiles([stat(np.concatenate([rows[g] for g in rng.integers(0, len(rows),
                                                                              len(rows))]))
                         for _ in range(rounds)])


def _percentiles(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))
