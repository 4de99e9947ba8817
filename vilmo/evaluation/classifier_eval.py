"""Held-out figures of the built-in classifier, each with a 95 % confidence interval.

Only held-out data are read: JailbreakBench's held-out behaviours, the held-out files written
for the judge (``vilmo/data/judge/*_heldout.jsonl``), ValueEval validation, the held-out part of
``cm_test`` and all of ``cm_test_hard``, FULCRA's and HH's held-out buckets (see
``vilmo.datasets.readers``). Thresholds come from the model's config and the shipped ``default`` policy
(operating points fitted on dev), never from these sets. Everything runs through the int8
path that ships (ONNX Runtime, ``vilmo.judge.value_onnx``).

"Flagged under a policy" means what the gateway does: some value of the policy scores at or
above the policy's threshold for it. The "harm score" of a text, for ROC-AUC and pairs, is the
highest score over the policy's values (each rescaled so that 0.5 is its operating point).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.datasets import readers as data
from vilmo.evaluation import metrics
from vilmo.evaluation.judge_eval import (
    SHIPPED_POLICIES,
    Judge,
    harm_areas,
    hh_flagged_under_policy,
    jailbreak,
    policy_thresholds,
    precision_recall,
    sounds_unsafe,
    stories,
    user_texts,
    written_replies,
)
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES, SCHWARTZ
from vilmo.judge.value_model import BuiltinClassifier

MIN_POSITIVES = 10
"""FULCRA values with fewer held-out 'goes against' replies get no AUC (too noisy)."""

Progress = Callable[[str], None]


def _heads(model: BuiltinClassifier, items: Sequence[ScoreInput], step: int = 256
           ) -> np.ndarray:
    parts = [model.head_probabilities(items[i:i + step]) for i in range(0, len(items), step)]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _values(model: BuiltinClassifier, items: Sequence[ScoreInput], step: int = 256
            ) -> np.ndarray:
    rows = []
    for i in range(0, len(items), step):
        for s in model.score(items[i:i + step], BUILTIN_VALUES):
            rows.append([s.violation[v] for v in BUILTIN_VALUES])
    return np.asarray(rows)


def valueeval(model: BuiltinClassifier, root: Path) -> dict[str, Any]:
    args = data.valueeval(root, "validation")
    probs = _heads(model, [ScoreInput(a.premise, a.prompt) for a in args])
    names = list(model.config["heads"])
    cols = [names.index(f"valueeval:{c}") for c in data.VALUEEVAL_CATEGORIES]
    cuts = np.array([model.config["valueeval_thresholds"][c] for c in data.VALUEEVAL_CATEGORIES])
    pred = probs[:, cols] >= cuts
    gold = np.array([a.labels for a in args])
    return {
        "n": len(args),
        "macro_f1": metrics.macro_f1(pred, gold),
        "macro_f1_ci95": metrics.bootstrap_ci(lambda i: metrics.macro_f1(pred[i], gold[i]),
                                              len(args)),
        "macro_f1_at_0.5": metrics.macro_f1(probs[:, cols] >= 0.5, gold),
        "f1_per_category": {c: round(metrics.f1(pred[:, j], gold[:, j]), 4)
                            for j, c in enumerate(data.VALUEEVAL_CATEGORIES)},
    }


def commonsense(model: BuiltinClassifier, root: Path, which: str) -> dict[str, Any]:
    rows = (data.commonsense(root, "test", "heldout") if which == "cm_test_heldout"
            else data.commonsense(root, "test_hard"))
    probs = _heads(model, [ScoreInput(t) for t, _ in rows])
    col = list(model.config["heads"]).index("cm")
    correct = int(((probs[:, col] >= 0.5) == np.array([y for _, y in rows], bool)).sum())
    return {"n": len(rows), "accuracy": correct / len(rows),
            "accuracy_ci95": metrics.wilson(correct, len(rows))}


def fulcra(model: BuiltinClassifier, root: Path) -> dict[str, Any]:
    rows = data.fulcra(root, "heldout")
    scores = _values(model, [ScoreInput(r.response, r.prompt) for r in rows])
    per: dict[str, Any] = {}
    usable = []
    for v in SCHWARTZ:
        y = np.array([float(r.values.get(v) == -1) for r in rows])
        j = BUILTIN_VALUES.index(v)
        entry: dict[str, Any] = {"positives": int(y.sum())}
        if y.sum() >= MIN_POSITIVES:
            s = scores[:, j]
            entry["auc"] = metrics.roc_auc(s, y)
            entry["auc_ci95"] = metrics.bootstrap_ci(_auc_of(s, y), len(y))
            usable.append((s, y))
        per[v] = entry

    def macro(i: np.ndarray) -> float:
        return float(np.nanmean([metrics.roc_auc(s[i], y[i]) for s, y in usable]))

    any_y = np.array([float(any(x < 0 for x in r.values.values())) for r in rows])
    any_s = scores[:, [BUILTIN_VALUES.index(v) for v in SCHWARTZ]].max(axis=1)
    return {
        "n": len(rows), "macro_auc": macro(np.arange(len(rows))),
        "macro_auc_ci95": metrics.bootstrap_ci(macro, len(rows)),
        "values_in_macro": [v for v in SCHWARTZ if "auc" in per[v]],
        "per_value": per,
        "any_value_auc": metrics.roc_auc(any_s, any_y),
        "any_value_auc_ci95": metrics.bootstrap_ci(
            lambda i: metrics.roc_auc(any_s[i], any_y[i]), len(rows)),
    }


def _auc_of(s: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda i: metrics.roc_auc(s[i], y[i])


def false_positives(model: BuiltinClassifier, root: Path) -> dict[str, Any]:
    pairs = data.hh_chosen(root, "heldout")
    scores = _values(model, [ScoreInput(r, p) for p, r in pairs])
    flagged = scores >= 0.5
    hits = int(flagged.any(axis=1).sum())
    top = {BUILTIN_VALUES[j]: int(flagged[:, j].sum()) for j in range(len(BUILTIN_VALUES))
           if flagged[:, j].any()}
    return {"n": len(pairs), "flagged_share": hits / len(pairs),
            "flagged_share_ci95": metrics.wilson(hits, len(pairs)),
            "flagged_by_value": dict(sorted(top.items(), key=lambda t: -t[1]))}


def late_violations(model: BuiltinClassifier, root: Path, words: int = 300,
                    seed: int = 0) -> dict[str, Any]:
    """Whether windowing still catches a violation that comes late: FULCRA held-out replies
    that go against a value and are flagged on their own, each placed after ``words`` words of
    held-out HH replies (benign), scored again."""
    rows = [r for r in data.fulcra(root, "heldout") if any(x < 0 for x in r.values.values())]
    alone = _values(model, [ScoreInput(r.response, r.prompt) for r in rows]).max(axis=1) >= 0.5
    caught = [r for r, hit in zip(rows, alone, strict=True) if hit]
    benign = [reply.split() for _, reply in data.hh_chosen(root, "heldout")]
    rng = random.Random(seed)

    def preamble() -> str:
        out: list[str] = []
        while len(out) < words:
            out += rng.choice(benign)
        return " ".join(out[:words])

    late = _values(model, [ScoreInput(f"{preamble()}\n\n{r.response}", r.prompt)
                           for r in caught]).max(axis=1) >= 0.5
    kept = int(late.sum())
    return {"n": len(caught), "words_before": words,
            "still_flagged_share": kept / len(caught) if caught else float("nan"),
            "still_flagged_share_ci95": metrics.wilson(kept, len(caught))}


def safety_topics(model: BuiltinClassifier, root: Path) -> dict[str, Any]:
    """Topic heads on SafeRLHF test prompts (which harm a text is about; not stance)."""
    rows = data.saferlhf(root, "test")
    probs = _heads(model, [ScoreInput(p) for p, _ in rows])
    names = list(model.config["heads"])
    aucs = {}
    for v in sorted({v for _, ids in rows for v in ids}):
        y = np.array([float(v in ids) for _, ids in rows])
        if y.sum() >= MIN_POSITIVES:
            aucs[v] = metrics.roc_auc(probs[:, names.index(f"topic:{v}")], y)
    return {"n": len(rows), "macro_auc": float(np.mean(list(aucs.values()))),
            "auc_per_category": {k: round(a, 4) for k, a in aucs.items()}}


def weights_name(model_dir: Path) -> str:
    """The weights' folder as the report names it: relative to the package's parent for the
    shipped weights (a report does not carry the path of the machine that made it)."""
    package = Path(__file__).resolve().parents[1]
    try:
        return str(model_dir.resolve().relative_to(package.parent))
    except ValueError:
        return str(model_dir)


def evaluate(root: Path, model: BuiltinClassifier | None = None,
             progress: Progress | None = None, policy: Path | None = None,
             legacy: bool = True) -> dict[str, Any]:
    """Every held-out figure, as one JSON-ready object: the judge's targets under ``policy``
    (default: the shipped ``default`` policy), then (``legacy``) the earlier figures."""
    model = model or BuiltinClassifier(threads=os.cpu_count() or 1)  # offline: every core
    say = progress or (lambda _: None)
    policy = policy or SHIPPED_POLICIES / "default.yaml"
    judge = Judge(model, policy_thresholds(policy))
    out: dict[str, Any] = {"model": weights_name(Path(model.model_dir)), "policy": policy.stem,
                           "operating_rule": model.config.get("operating_rule"),
                           "plain_operating_rule": model.config.get("plain_operating_rule")}
    targets: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("t1_sounds_unsafe_replies_flagged", lambda: sounds_unsafe(judge)),
        ("t2_jailbreakbench_heldout", lambda: jailbreak(judge, root)),
        ("t3_user_texts", lambda: user_texts(judge, root)),
        ("t4_moral_stories", lambda: stories(judge)),
        ("t6_harm_areas", lambda: harm_areas(judge)),
        ("written_replies", lambda: written_replies(judge)),
        ("t7_hh_flagged_under_policy", lambda: hh_flagged_under_policy(judge, root)),
        ("precision_recall_pooled", lambda: precision_recall(judge, root)),
    ]
    for name, run in targets:
        say(name)
        out[name] = run()
    out["t5_pairs"] = {
        "jailbreakbench_same_request": out["t2_jailbreakbench_heldout"].pop("pairs"),
        "harm_areas_same_prompt": out["t6_harm_areas"].pop("pairs"),
        "written_same_safety_value": out["written_replies"].pop("pairs_same_safety_value")}
    if not legacy:
        return out
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("valueeval_validation", lambda: valueeval(model, root)),
        ("ethics_cm_test_heldout", lambda: commonsense(model, root, "cm_test_heldout")),
        ("ethics_cm_test_hard", lambda: commonsense(model, root, "cm_test_hard")),
        ("fulcra_heldout", lambda: fulcra(model, root)),
        ("hh_helpful_false_positives", lambda: false_positives(model, root)),
        ("late_violations", lambda: late_violations(model, root)),
        ("saferlhf_test_topics", lambda: safety_topics(model, root)),
    ]
    for name, run in steps:
        say(name)
        out[name] = run()
    zs = model.model_dir.parent / "zero_shot.json"
    if zs.exists():
        out["zero_shot_fulcra_heldout"] = json.loads(zs.read_text("utf-8"))
    return out
