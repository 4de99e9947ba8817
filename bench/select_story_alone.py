"""Dev screen of where the story foundations' heads are read (issue 17 target 4; the model
card's "Targets not met": story continuations scored without the story for the foundation
heads).

``mft.X = P(foundation X) x max(P(cm), bad)``. A reply after a prompt is already read twice
(after its prompt and alone, ``window.alone_weight``), so its reading alone costs no extra
pass. Each variant ``<F>/<C>`` takes, in each whole window after the prompt, the
``foundation:*`` rows' probabilities (F) and the ``cm`` row's (C) from: ``whole`` (the window's
own, shipped), ``alone`` (the item's reading alone, highest over its windows alone), ``mean``
(half each) or ``max`` (the higher). Only ``mft.*`` can move (nothing else reads those rows);
the sentence reading and plain texts (no reading alone) are unchanged. Each variant's operating
points are refit by the shipped rule (``vilmo.train.operating.fit``) on the same dev readings,
with the shipped weights and Platt scaling; then, at those points: the rule's figures, the
JailbreakBench dev replies (complied against refused, after their prompt: ROC-AUC of the
highest score, share flagged), the dev stories (``vilmo/data/judge/stories_dev.jsonl``, the
foundation's score of violating against upholding continuations, after the story and alone)
and the clear cases under ``default``. Dev only: no held-out set is read.

Each text's rows are batched apart (as served), so its head logits are read once and every
variant is composed from them: one pass of the graph for the whole screen (4 - 8 minutes on
the shared 2-core host). The rule that picks a variant was written before any was read; it is
in the model card ("Held-out figures", the story-foundation section).

    python bench/select_story_alone.py                 # the 16 variants
    python bench/select_story_alone.py whole/whole alone/whole
"""

from __future__ import annotations

import json
import os
import sys
import time
from itertools import product
from typing import Any

import numpy as np
from dev_split import dev_examples
from select_whole_pooling import auc, clear_cases

from vilmo.datasets import readers as data
from vilmo.evaluation.prompts import moral_stories
from vilmo.judge.classifier import ScoreInput, given_prompt
from vilmo.judge.heads import BUILTIN_VALUES, READING_SOURCES, compose, read_alone
from vilmo.judge.pooling import rescaled
from vilmo.judge.value_model import (
    ALONE,
    ALONE_FINE,
    SENTENCE,
    WHOLE,
    BuiltinClassifier,
    _points,
    default_model_dir,
)
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.train.classifier import TrainSettings
from vilmo.train.examples import story_text
from vilmo.train.operating import GROUPS, dev_groups, fit
from vilmo.types import Matrix
from vilmo.verdict import decide

FOUNDATIONS = ("mft.care", "mft.fairness", "mft.loyalty", "mft.authority", "mft.sanctity")
Key = tuple[str | None, str]


def read_rows(model: BuiltinClassifier, items: list[ScoreInput]
              ) -> dict[Key, tuple[Matrix, np.ndarray]]:
    """Each distinct text's row logits and row kinds, as ``score`` reads them."""
    keys = list(dict.fromkeys((given_prompt(it.prompt), it.response) for it in items))
    out: dict[Key, tuple[Matrix, np.ndarray]] = {}
    for start in range(0, len(keys), 64):
        chunk = keys[start:start + 64]
        logits, owner, kind = model._window_logits([ScoreInput(r, p) for p, r in chunk])
        rows = np.asarray(owner)
        for i, key in enumerate(chunk):
            out[key] = (logits[rows == i], kind[rows == i])
    return out


def reading(model: BuiltinClassifier, logits: Matrix, kind: np.ndarray, found: str, cm: str
            ) -> tuple[Matrix, Matrix]:
    """One text's whole and sentence readings (``BuiltinClassifier._values``), with the
    foundation and ``cm`` rows of its whole windows after the prompt read as the variant
    says."""
    m = model._model()
    probs = model._probs(logits, kind)
    bare = (kind == ALONE) | (kind == ALONE_FINE)
    span = kind == SENTENCE
    if bare.any():
        whole_rows = kind == WHOLE
        probs[whole_rows] = read_alone(probs[whole_rows], probs[bare].max(axis=0), m.names,
                                       found, cm)
    vio, _ = compose(probs, m.names, m.config.get("compose", "product"),
                     m.config.get("compose_power", 1.0))
    paired = ~span & ~bare
    zero = np.zeros(vio.shape[1], dtype=np.float32)
    whole = vio[paired].max(axis=0) if paired.any() else zero
    if bare.any():
        w = m.spec.alone_weight
        whole = ((1.0 - w) * whole + w * vio[bare].max(axis=0)).astype(np.float32)
    return np.maximum(whole, 0.0), (np.maximum(vio[span].max(axis=0), 0.0) if span.any()
                                    else zero)


def readings(model: BuiltinClassifier, rows: dict[Key, tuple[Matrix, np.ndarray]],
             items: list[ScoreInput], found: str, cm: str) -> list[tuple[Matrix, Matrix]]:
    """``reading`` of each item from its stored rows."""
    return [reading(model, *rows[(given_prompt(it.prompt), it.response)], found, cm)
            for it in items]


def variant_scores(model: BuiltinClassifier, rows: dict[Key, tuple[Matrix, np.ndarray]],
                   items: list[ScoreInput], found: str, cm: str,
                   points: tuple[tuple[Matrix | None, Matrix | None], ...]) -> Matrix:
    """Each item's scores at the variant's points (the plain ones for a text without a
    prompt), as ``BuiltinClassifier.score`` rescales them."""
    reply, plain = points
    return np.asarray([rescaled(w, s, *(reply if given_prompt(it.prompt) else plain))
                       for it, (w, s) in zip(items, readings(model, rows, items, found, cm),
                                             strict=True)])


def jbb_dev(dev: list[Any]) -> dict[str, list[ScoreInput]]:
    """JailbreakBench dev replies after their prompt: complied (``harm`` 1) and refused."""
    out: dict[str, dict[Key, None]] = {"complied": {}, "refused": {}}
    for e in dev:
        y = e.labels.get("harm", -1.0)
        if e.source == "jailbreakbench" and given_prompt(e.prompt) and y in (0.0, 1.0):
            out["complied" if y == 1.0 else "refused"][(e.prompt, e.response)] = None
    return {g: [ScoreInput(r, p) for p, r in keys] for g, keys in out.items()}


def main(variants: list[str]) -> None:
    start = time.perf_counter()
    dev, settings = dev_examples(default_model_dir())
    groups = dev_groups(dev)
    jbb = jbb_dev(dev)
    prompts = {p.id: story_text(str(p.messages[-1]["content"])) for p in moral_stories()}
    stories = data.judge_rows("stories_dev")
    y = np.array([float(bool(r["violates"])) for r in stories])
    story_items = {
        "after_story": [ScoreInput(str(r["continuation"]), prompts[str(r["story_id"])])
                        for r in stories],
        "alone": [ScoreInput(str(r["continuation"]), None) for r in stories]}
    cases = clear_cases()
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    model = BuiltinClassifier(cache_size=0, threads=os.cpu_count() or 1)
    everything = [it for g in groups.values() for it in g] + [
        it for g in jbb.values() for it in g] + [
        it for g in story_items.values() for it in g] + [it for _, it, _ in cases]
    rows = read_rows(model, everything)
    print(json.dumps({"texts": len(rows), "seconds": round(time.perf_counter() - start, 1)}),
          flush=True)
    target = settings.get("benign_flagged_target", TrainSettings().benign_flagged_target)
    for variant in variants:
        found, _, cm = variant.partition("/")
        whole, spans, plain = {}, {}, {}
        for name in GROUPS:
            pairs = readings(model, rows, groups[name], found, cm)
            whole[name] = np.asarray([p[0] for p in pairs], np.float64)
            spans[name] = np.asarray([p[1] for p in pairs], np.float64)
            plain[name] = np.asarray([given_prompt(it.prompt) is None for it in groups[name]])
        points = fit(whole, spans, plain, target, BUILTIN_VALUES)
        reply_points = (_points(points["operating_points"]),
                        _points(points["sentence_operating_points"]))
        plain_points = (_points(points["plain_operating_points"]),
                        _points(points["plain_sentence_operating_points"]))

        both = (reply_points, plain_points)

        out: dict[str, Any] = {"variant": variant}
        for prefix in ("", "plain_"):
            rule = points[f"{prefix}operating_rule"]
            out[f"{prefix}rule"] = {
                "objective": round(rule["dev_harmful_flagged"] - rule["dev_refused_flagged"], 4),
                **{g: round(rule[f"dev_{g}_flagged"] * rule[f"dev_{g}"]) for g in GROUPS},
                **{k: rule[k] for k in ("alpha", "floor", "sentence_alpha", "sentence_floor")}}
        top = {g: variant_scores(model, rows, items, found, cm, both).max(axis=1) for g, items in jbb.items()}
        out["jbb_dev"] = {"auc": round(auc(top["complied"], top["refused"]), 4),
                          "complied_flagged": round(float((top["complied"] >= 0.5).mean()), 4),
                          "refused_flagged": round(float((top["refused"] >= 0.5).mean()), 4),
                          "n": [len(top["complied"]), len(top["refused"])]}
        for name, items in story_items.items():
            s = variant_scores(model, rows, items, found, cm, both)
            per = {}
            for f in FOUNDATIONS:
                sel = np.array([r["foundation"] == f for r in stories], dtype=bool)
                col = s[sel][:, BUILTIN_VALUES.index(f)]
                per[f.removeprefix("mft.")] = round(auc(col[y[sel] == 1], col[y[sel] == 0]), 4)
            flagged: np.ndarray = np.asarray((s >= 0.5).any(axis=1), dtype=bool)
            out[f"stories_{name}"] = {**per, "violating_flagged": int(flagged[y == 1].sum()),
                                      "upholding_flagged": int(flagged[y == 0].sum())}
        case_scores = variant_scores(model, rows, [it for _, it, _ in cases], found, cm, both)
        wrong = []
        for (name, _, bad), row in zip(cases, case_scores, strict=True):
            verdict = decide({v: float(row[BUILTIN_VALUES.index(v)]) for v in policy.values},
                             policy)
            if bool(verdict.violations) != bad:
                wrong.append(f"{name} {row.max():.3f}")
        out["clear_cases_wrong"] = wrong
        out["points_mft"] = {v: points["operating_points"][v] for v in FOUNDATIONS}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or [f"{f}/{c}" for f, c in product(READING_SOURCES, READING_SOURCES)])
