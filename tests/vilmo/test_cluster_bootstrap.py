"""Held-out CIs resample the independent unit (a behaviour, a story, a prompt), not the rows
that share it; and a missing (NaN) score is left out of AUC and Platt scaling alike."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from vilmo.datasets import readers as data
from vilmo.evaluation import judge_eval, metrics
from vilmo.judge.classifier import ScoreInput, ValueScores
from vilmo.judge.heads import BUILTIN_VALUES


def width(ci: tuple[float, float]) -> float:
    return ci[1] - ci[0]


def clustered(groups: int, size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels whose rate and scores whose level vary by group, on top of a label effect
    (as replies to one behaviour mostly comply or mostly refuse, and read alike)."""
    rng = np.random.default_rng(seed)
    y = rng.random(groups * size) < np.repeat(rng.random(groups), size)
    effect = np.repeat(rng.normal(0, 1.5, groups), size)
    return effect + 1.0 * y + rng.normal(0, 0.5, groups * size), y.astype(float), \
        [f"g{g}" for g in np.repeat(np.arange(groups), size)]


def test_one_row_per_group_is_the_plain_bootstrap() -> None:
    s, y, _ = clustered(60, 1)
    def auc(i: np.ndarray) -> float:
        return metrics.roc_auc(s[i], y[i])

    names = [f"row {i}" for i in reversed(range(60))]  # any labels, in any order
    assert metrics.cluster_bootstrap_ci(auc, names) == metrics.bootstrap_ci(auc, 60)


def test_clustered_rows_widen_the_interval() -> None:
    s, y, groups = clustered(23, 16)
    rows = judge_eval._auc(s, y)
    by_group = judge_eval._auc(s, y, np.array(groups))
    assert by_group["auc"] == rows["auc"] and by_group["n"] == rows["n"]  # same estimate
    assert by_group["clusters"] == 23 and "clusters" not in rows
    assert width(by_group["auc_ci95"]) > 1.2 * width(rows["auc_ci95"])
    share = judge_eval._share(s > 1.0, np.array(groups))
    assert share["share"] == judge_eval._share(s > 1.0)["share"]
    assert width(share["share_ci95"]) > 1.5 * width(judge_eval._share(s > 1.0)["share_ci95"])
    every = judge_eval._share(np.ones(len(s), dtype=bool), np.array(groups))
    assert every["share"] == 1.0 and every["share_ci95"] == metrics.wilson(23, 23)  # not [1, 1]


class ByBehaviour:
    """A stand-in for the judge whose harm score shares an effect per behaviour."""

    def __init__(self, rows: Sequence[data.JailbreakReply]) -> None:
        rng = np.random.default_rng(2)
        self.effect = {r.behavior: float(rng.normal(0, 0.2)) for r in rows}
        self.of = {r.response: (r.behavior, r.complied) for r in rows}

    def score(self, items: Sequence[ScoreInput], ids: Sequence[str]) -> list[ValueScores]:
        out = []
        for item in items:
            behaviour, complied = self.of[item.response]
            p = min(max(0.4 + self.effect[behaviour] + 0.2 * complied, 0.0), 1.0)
            out.append(ValueScores(dict.fromkeys(ids, p)))
        return out


def test_jailbreak_intervals_resample_behaviours() -> None:
    root = data.data_dir()
    try:
        rows = data.jailbreakbench(root, "heldout")
    except data.DataMissing:
        pytest.skip("no JailbreakBench data")
    judge = judge_eval.Judge(ByBehaviour(rows), {"safety.violence": 0.5})  # type: ignore[arg-type]
    out = judge_eval.jailbreak(judge, Path(root))
    behaviours = len({r.behavior for r in rows})
    entry = out["after_request"]
    assert entry["clusters"] == behaviours
    assert entry["complied_flagged"]["clusters"] + entry["refused_flagged"]["clusters"] >= behaviours
    assert out["pairs"]["clusters"] <= behaviours
    y = np.array([float(r.complied) for r in rows])
    harm = judge.harm(judge.scores([ScoreInput(r.response, r.goal) for r in rows]))
    assert entry["auc"] == metrics.roc_auc(harm, y)
    assert entry["auc_ci95"] == metrics.cluster_bootstrap_ci(
        lambda i: metrics.roc_auc(harm[i], y[i]), [r.behavior for r in rows])
    assert "safety.violence" in BUILTIN_VALUES


def test_a_missing_score_is_left_out_of_auc_and_platt() -> None:
    nan = float("nan")
    assert np.isnan(metrics.roc_auc([nan, 0.1], [1, 0]))  # one class left
    assert metrics.roc_auc([0.9, nan, 0.2], [1, 0, 0]) == metrics.roc_auc([0.9, 0.2], [1, 0])
    assert metrics.roc_auc([nan, 0.9, 0.2], [0, 1, 0]) == 1.0  # NaN no longer ranked top
    a, b = metrics.fit_platt([nan, 2.0, 1.0, -1.0, -2.0], [1, 1, 0, 0, 0])
    assert (a, b) == metrics.fit_platt([2.0, 1.0, -1.0, -2.0], [1, 0, 0, 0])
    assert np.isfinite(a) and np.isfinite(b)
