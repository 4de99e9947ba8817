"""Operating points: where on each value's score the gateway should act, chosen on dev.

A value is read twice (``vilmo.judge.value_model``): whole (the reply's windows) and by
sentences. Each reading gets its own points, by one rule that is the same for every value: the
threshold lets through all but a share ``alpha`` of the benign dev texts on that value, and is
never below ``floor``. The two readings' ``alpha`` and ``floor`` are chosen together on dev:
among the four-tuples for which at most ``benign_target`` of benign dev texts are flagged by
either reading for any value, the one that flags the most harmful dev texts minus the refusals
flagged (JailbreakBench dev). One set of points for both readings (issue 17's first sentence
reading) let the sentences, which raise benign texts' highest scores, push the whole reading's
points up: dev harmful-minus-refused 0.40 against 0.59 with a point per reading.

A plain text (scored without a prompt, or with a blank one: an input check, a reply with no
user turn) is read once, never alone-mixed, and shares no benign texts' scores with replies; it
gets its own points per reading by the same rule on the dev texts without a prompt (``plain_*``
keys), so that a reply reading's refit does not move its verdict.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.datasets.readers import Example
from vilmo.judge.classifier import ScoreInput, given_prompt

OPERATING_ALPHAS = (0.0, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03)
OPERATING_FLOORS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
SENTENCE_FLOORS = (*OPERATING_FLOORS, 0.6, 0.7, 0.8)
"""A sentence alone reads higher than in its reply, so its floor may be higher."""
GROUPS = ("benign", "harmful", "refused")
POINT_SCALE = 100_000
"""Operating points are written with 5 decimals."""


def dev_groups(dev: Sequence[Example]) -> dict[str, list[ScoreInput]]:
    """Benign: HH dev replies and user turns, FULCRA dev replies that go against nothing, the
    written dev replies and texts that are not harmful. Harmful: dev texts labelled harmful
    (``harm`` or ``content`` 1). Refused: JailbreakBench dev refusals."""
    groups: dict[str, dict[tuple[str | None, str], None]] = {g: {} for g in GROUPS}
    for e in dev:
        y = max(e.labels.get("harm", -1.0), e.labels.get("content", -1.0))
        key = (given_prompt(e.prompt), e.response)
        if y >= 1.0:
            groups["harmful"][key] = None
        elif y == 0.0 and e.source == "jailbreakbench":
            groups["refused"][key] = None
        elif y == 0.0 and e.source in ("hh", "fulcra", "judge"):
            groups["benign"][key] = None
    return {g: [ScoreInput(r, p) for p, r in keys] for g, keys in groups.items()}


def operating_points(out_dir: Path, dev: Sequence[Example],
                     benign_target: float = 0.01) -> dict[str, Any]:
    """Each value's threshold on each reading's composed score, fitted on dev (module doc);
    ``BuiltinClassifier`` rescales scores so that these points read 0.5. The reply points
    (``operating_points``, ``sentence_operating_points``) are fitted on every dev text, as
    before; plain texts (no prompt: input checks, a reply scored alone) get their own
    (``plain_operating_points``, ``plain_sentence_operating_points``), by the same rule on the
    dev texts without a prompt only."""
    from vilmo.judge.heads import BUILTIN_VALUES
    from vilmo.judge.value_model import BuiltinClassifier

    model = BuiltinClassifier(out_dir, cache_size=0, threads=os.cpu_count() or 1)
    whole: dict[str, np.ndarray] = {}
    spans: dict[str, np.ndarray] = {}
    plain: dict[str, np.ndarray] = {}
    for name, items in dev_groups(dev).items():
        read = [r for i in range(0, len(items), 256) for r in model.readings(items[i:i + 256])]
        shape = (len(items), len(BUILTIN_VALUES))
        whole[name] = np.asarray([r[0] for r in read], dtype=np.float64).reshape(shape)
        spans[name] = np.asarray([r[1] for r in read], dtype=np.float64).reshape(shape)
        plain[name] = np.asarray([given_prompt(it.prompt) is None for it in items], dtype=bool)
    return fit(whole, spans, plain, benign_target, BUILTIN_VALUES)


def fit(whole: dict[str, np.ndarray], spans: dict[str, np.ndarray],
        plain: dict[str, np.ndarray], benign_target: float,
        values: Sequence[str]) -> dict[str, Any]:
    """The config's points and rules from the dev readings per group (rows: texts, columns:
    ``values``): the reply points from every row, the ``plain_`` points from the rows without
    a prompt (``plain``)."""
    every = {g: np.ones(len(plain[g]), dtype=bool) for g in GROUPS}
    out: dict[str, Any] = {}
    for prefix, keep in (("", every), ("plain_", plain)):
        w = {g: whole[g][keep[g]] for g in GROUPS}
        choice = choose(w, {g: spans[g][keep[g]] for g in GROUPS}, benign_target)
        cut, span_cut = choice.pop("cut"), choice.pop("span_cut")
        out |= {f"{prefix}operating_points": _by_value(cut, values),
                f"{prefix}sentence_operating_points": _by_value(span_cut, values),
                f"{prefix}operating_rule": {"benign_flagged_target": benign_target, **choice,
                                            **{f"dev_{g}": len(w[g]) for g in GROUPS}}}
    return out


def choose(whole: dict[str, np.ndarray], spans: dict[str, np.ndarray],
           benign_target: float) -> dict[str, Any]:
    """The rule's search: the points per value of each reading and the dev figures."""
    best: tuple[float, dict[str, Any]] | None = None
    span_cuts = []
    for span_alpha in OPERATING_ALPHAS:
        for span_floor in SENTENCE_FLOORS:
            span_cut = np.maximum(_benign_quantile(spans["benign"], span_alpha), span_floor)
            span_cuts.append((span_alpha, span_floor, span_cut,
                              {g: (spans[g] >= span_cut).any(axis=1) for g in GROUPS}))
    for alpha in OPERATING_ALPHAS:
        per_value = _benign_quantile(whole["benign"], alpha)
        for floor in OPERATING_FLOORS:
            cut = np.maximum(per_value, floor)
            by_whole = {g: (whole[g] >= cut).any(axis=1) for g in GROUPS}
            for span_alpha, span_floor, span_cut, by_span in span_cuts:
                share = _shares(by_whole, by_span)
                if share["benign"] > benign_target:
                    continue
                objective = share["harmful"] - share["refused"]
                if best is None or objective > best[0]:
                    best = (objective, {
                        "alpha": alpha, "floor": floor, "sentence_alpha": span_alpha,
                        "sentence_floor": span_floor, "cut": cut, "span_cut": span_cut,
                        **{f"dev_{g}_flagged": share[g] for g in GROUPS}})
    if best is None:  # nothing meets the target: the strictest rule of each reading's grid
        floor, span_floor = max(OPERATING_FLOORS), max(SENTENCE_FLOORS)
        cut = np.maximum(_benign_quantile(whole["benign"], 0.0), floor)
        span_cut = np.maximum(_benign_quantile(spans["benign"], 0.0), span_floor)
        share = _shares({g: (whole[g] >= cut).any(axis=1) for g in GROUPS},
                        {g: (spans[g] >= span_cut).any(axis=1) for g in GROUPS})
        return {"alpha": 0.0, "floor": floor, "sentence_alpha": 0.0,
                "sentence_floor": span_floor, "cut": cut, "span_cut": span_cut,
                **{f"dev_{g}_flagged": share[g] for g in GROUPS}}
    return best[1]


def _shares(by_whole: dict[str, np.ndarray], by_span: dict[str, np.ndarray],
            ) -> dict[str, float]:
    """Per dev group, the share flagged by either reading."""
    hit = {g: by_whole[g] | by_span[g] for g in GROUPS}
    return {g: float(hit[g].mean()) if len(hit[g]) else 0.0 for g in GROUPS}


def _by_value(cut: np.ndarray, values: Sequence[str]) -> dict[str, float]:
    """Points as written in the config: rounded UP to 5 decimals. A point sits a hair above the
    highest benign score it lets through (``_benign_quantile``); rounded to nearest, about half
    of them fell below that score and flagged it (the served dev benign share was 1.97 % for
    points fitted to 0.76 %)."""
    return {v: min(1.0, math.ceil(float(t) * POINT_SCALE) / POINT_SCALE)
            for v, t in zip(values, cut, strict=True)}


def _benign_quantile(benign: np.ndarray, alpha: float) -> np.ndarray:
    """Per value, the lowest threshold that flags at most ``alpha`` of the benign rows."""
    if not len(benign):
        return np.zeros(benign.shape[1])
    ranked = -np.sort(-benign, axis=0)  # descending per value
    k = int(np.floor(alpha * len(benign)))
    top = ranked[min(k, len(ranked) - 1)]
    out: np.ndarray = np.minimum(np.nextafter(top, np.inf), 1.0)
    return out
