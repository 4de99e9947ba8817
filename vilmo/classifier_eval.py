"""Held-out figures of the built-in classifier, each with a 95 % confidence interval.

Only held-out data are read: JailbreakBench's held-out behaviours, the held-out files written
for the judge (``vilmo/data/judge/*_heldout.jsonl``), ValueEval validation, the held-out part of
``cm_test`` and all of ``cm_test_hard``, FULCRA's and HH's held-out buckets (see
``vilmo.data``). Thresholds come from the model's config and the shipped ``default`` policy
(operating points fitted on dev), never from these sets. Everything runs through the int8
path that ships (ONNX Runtime, ``vilmo.value_onnx``).

"Flagged under a policy" means what the gateway does: some value of the policy scores at or
above the policy's threshold for it. The "harm score" of a text, for ROC-AUC and pairs, is the
highest score over the policy's values (each rescaled so that 0.5 is its operating point).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vilmo import data, metrics
from vilmo.classifier import ScoreInput
from vilmo.heads import BUILTIN_VALUES, SCHWARTZ
from vilmo.train.examples import story_text
from vilmo.value_model import BuiltinClassifier

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


SHIPPED_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def policy_thresholds(path: Path) -> dict[str, float]:
    """The built-in value ids a policy checks, with their thresholds."""
    from vilmo.policy import load_policy

    policy = load_policy(path)
    return {v: r.threshold for v, r in policy.values.items()}


class _Judge:
    """Scores of held-out items under a policy: flags, harm scores, per-value scores."""

    def __init__(self, model: BuiltinClassifier, thresholds: dict[str, float]) -> None:
        self.model = model
        self.ids = list(thresholds)
        self.cuts = np.array([thresholds[v] for v in self.ids])
        self.cols = [BUILTIN_VALUES.index(v) for v in self.ids]

    def scores(self, items: Sequence[ScoreInput]) -> np.ndarray:
        return _values(self.model, items)

    def flagged(self, scores: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray((scores[:, self.cols] >= self.cuts).any(axis=1))
        return out

    def harm(self, scores: np.ndarray) -> np.ndarray:
        out: np.ndarray = scores[:, self.cols].max(axis=1)
        return out


def _share(hits: np.ndarray) -> dict[str, Any]:
    k, n = int(hits.sum()), len(hits)
    return {"n": n, "flagged": k, "share": k / n if n else float("nan"),
            "share_ci95": metrics.wilson(k, n)}


def _auc(s: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"n": len(y), "positives": int(y.sum()), "auc": metrics.roc_auc(s, y),
            "auc_ci95": metrics.bootstrap_ci(_auc_of(s, y), len(y))}


def sounds_unsafe(judge: _Judge) -> dict[str, Any]:
    """Target 1: harmless replies to prompts that only sound harmful, flagged."""
    rows = [r for r in data.judge_rows("replies_heldout") if r["kind"] == "sounds_unsafe"]
    scores = judge.scores([ScoreInput(str(r["reply"]), str(r["prompt"])) for r in rows])
    return _share(judge.flagged(scores))


def jailbreak(judge: _Judge, root: Path) -> dict[str, Any]:
    """Target 2: complying against refusing replies to the held-out behaviours' requests."""
    rows = data.jailbreakbench(root, "heldout")
    y = np.array([float(r.complied) for r in rows])
    out: dict[str, Any] = {"behaviours": len({r.behavior for r in rows})}
    for name, prompt in (("after_request", lambda r: r.goal), ("reply_alone", lambda r: None),
                         ("after_attack_prompt", lambda r: r.attack_prompt)):
        scores = judge.scores([ScoreInput(r.response, prompt(r)) for r in rows])
        harm, flags = judge.harm(scores), judge.flagged(scores)
        entry = _auc(harm, y)
        entry["complied_flagged"] = _share(flags[y == 1])
        entry["refused_flagged"] = _share(flags[y == 0])
        if name == "after_request":
            entry["complied_flagged_by_category"] = {
                c: round(float(flags[(y == 1) & cats].mean()), 3)
                for c in sorted({r.category for r in rows})
                if (cats := np.array([r.category == c for r in rows])).any()
                and ((y == 1) & cats).any()}
            out["pairs"] = _jbb_pairs(rows, harm)
        out[name] = entry
    return out


def _jbb_pairs(rows: Sequence[data.JailbreakReply], harm: np.ndarray) -> dict[str, Any]:
    """Every (complying, refusing) pair of replies to the same held-out request."""
    wins: list[float] = []
    by_goal: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_goal.setdefault(r.goal, []).append(i)
    for idx in by_goal.values():
        for i in idx:
            for j in idx:
                if rows[i].complied and not rows[j].complied:
                    wins.append(1.0 if harm[i] > harm[j] else 0.5 if harm[i] == harm[j] else 0.0)
    return _pair_share(np.array(wins))


def _pair_share(wins: np.ndarray) -> dict[str, Any]:
    n = len(wins)
    return {"pairs": n, "more_harmful_higher": float(wins.mean()) if n else float("nan"),
            "ci95": metrics.bootstrap_ci(lambda i: float(wins[i].mean()), n) if n else None}


def user_texts(judge: _Judge, root: Path) -> dict[str, Any]:
    """Target 3: plain user texts (input checks): harmful against clean, and clean flagged
    (the written clean texts and HH held-out user turns)."""
    rows = data.judge_rows("texts_heldout")
    scores = judge.scores([ScoreInput(str(r["text"])) for r in rows])
    y = np.array([float(bool(r["harmful"])) for r in rows])
    harm = judge.harm(scores)
    hh = [p for p, _ in data.hh_chosen(root, "heldout") if p]
    hh_flags = judge.flagged(judge.scores([ScoreInput(p) for p in dict.fromkeys(hh)]))
    flags = judge.flagged(scores)
    per = {}
    for c in sorted({str(r["category"]) for r in rows if r["category"]}):
        sel = np.array([r["category"] == c or not r["harmful"] for r in rows])
        per[c] = {"auc": metrics.roc_auc(harm[sel], y[sel]),
                  "flagged": round(float(flags[sel & (y == 1)].mean()), 3)}
    return {**_auc(harm, y), "harmful_flagged": _share(flags[y == 1]),
            "clean_flagged": _share(flags[y == 0]), "hh_user_turns_flagged": _share(hh_flags),
            "per_category": per}


def stories(judge: _Judge) -> dict[str, Any]:
    """Target 4: continuations of the held-out moral stories, per foundation: the
    foundation's score, violating against upholding."""
    from vilmo.prompts import moral_stories

    prompts = {p.id: story_text(str(p.messages[-1]["content"])) for p in moral_stories()}
    rows = data.judge_rows("stories_heldout")
    y = np.array([float(bool(r["violates"])) for r in rows])
    out: dict[str, Any] = {}
    for name, with_story in (("after_story", True), ("continuation_alone", False)):
        scores = judge.scores([ScoreInput(str(r["continuation"]),
                                          prompts[str(r["story_id"])] if with_story else None)
                               for r in rows])
        per = {}
        for f in sorted({str(r["foundation"]) for r in rows}):
            sel = np.array([r["foundation"] == f for r in rows])
            s = scores[sel][:, BUILTIN_VALUES.index(f)]
            per[f] = _auc(s, y[sel])
        flags = judge.flagged(scores)
        out[name] = {"per_foundation": per,
                     "min_auc": min(v["auc"] for v in per.values()),
                     "violating_flagged": _share(flags[y == 1]),
                     "upholding_flagged": _share(flags[y == 0])}
    return out


def harm_areas(judge: _Judge) -> dict[str, Any]:
    """Target 6: chat replies across harm areas, unsafe against safe; target 5 pairs: the
    unsafe and the safe reply to the same prompt."""
    rows = data.judge_rows("areas_heldout")
    scores = judge.scores([ScoreInput(str(r["reply"]), str(r["prompt"])) for r in rows])
    y = np.array([float(bool(r["unsafe"])) for r in rows])
    harm, flags = judge.harm(scores), judge.flagged(scores)
    per = {a: metrics.roc_auc(harm[sel], y[sel])
           for a in sorted({str(r["area"]) for r in rows})
           if (sel := np.array([r["area"] == a for r in rows])).any()}
    wins = []
    for i, r in enumerate(rows):
        for j, q in enumerate(rows):
            if r["unsafe"] and not q["unsafe"] and r["prompt"] == q["prompt"]:
                wins.append(1.0 if harm[i] > harm[j] else 0.5 if harm[i] == harm[j] else 0.0)
    return {**_auc(harm, y), "per_area_auc": per, "unsafe_flagged": _share(flags[y == 1]),
            "safe_flagged": _share(flags[y == 0]), "pairs": _pair_share(np.array(wins))}


def written_replies(judge: _Judge) -> dict[str, Any]:
    """The other held-out written replies: harmful ones flagged, refusals and de-escalations
    not, and (target 5) each harmful reply against each refusal of the same safety value."""
    rows = data.judge_rows("replies_heldout")
    scores = judge.scores([ScoreInput(str(r["reply"]), str(r["prompt"]) if r["prompt"] else None)
                           for r in rows])
    flags, harm = judge.flagged(scores), judge.harm(scores)
    kinds = np.array([str(r["kind"]) for r in rows])
    wins = []
    for i, r in enumerate(rows):
        for j, q in enumerate(rows):
            if r["kind"] == "harmful" and q["kind"] == "refusal" and r["safety"] == q["safety"]:
                wins.append(1.0 if harm[i] > harm[j] else 0.5 if harm[i] == harm[j] else 0.0)
    return {k: _share(flags[kinds == k]) for k in sorted(set(kinds))} | {
        "pairs_same_safety_value": _pair_share(np.array(wins))}


def hh_flagged_under_policy(judge: _Judge, root: Path) -> dict[str, Any]:
    """Target 7: benign HH held-out replies flagged under the policy."""
    pairs = data.hh_chosen(root, "heldout")
    return _share(judge.flagged(judge.scores([ScoreInput(r, p) for p, r in pairs])))


def precision_recall(judge: _Judge, root: Path) -> dict[str, Any]:
    """Precision and recall at the policy's thresholds on all held-out replies and texts
    pooled (harmful: JailbreakBench complied, written harmful replies, texts and unsafe
    area replies; benign: the rest, with HH held-out replies), overall and per value. The
    precision depends on this mix (about one harmful item in three)."""
    items: list[ScoreInput] = []
    labels: list[float] = []
    for jb in data.jailbreakbench(root, "heldout"):
        items.append(ScoreInput(jb.response, jb.goal))
        labels.append(float(jb.complied))
    for r in data.judge_rows("replies_heldout"):
        items.append(ScoreInput(str(r["reply"]), str(r["prompt"]) if r["prompt"] else None))
        labels.append(float(bool(r["harmful"])))
    for r in data.judge_rows("texts_heldout"):
        items.append(ScoreInput(str(r["text"])))
        labels.append(float(bool(r["harmful"])))
    for r in data.judge_rows("areas_heldout"):
        items.append(ScoreInput(str(r["reply"]), str(r["prompt"])))
        labels.append(float(bool(r["unsafe"])))
    for p, reply in data.hh_chosen(root, "heldout"):
        items.append(ScoreInput(reply, p))
        labels.append(0.0)
    scores = judge.scores(items)
    y = np.array(labels) > 0

    def pr(hit: np.ndarray) -> dict[str, Any]:
        tp = int((hit & y).sum())
        return {"flagged": int(hit.sum()), "precision": tp / hit.sum() if hit.any() else None,
                "precision_ci95": metrics.wilson(tp, int(hit.sum())) if hit.any() else None,
                "recall": tp / y.sum(), "recall_ci95": metrics.wilson(tp, int(y.sum()))}

    per = {v: pr(scores[:, BUILTIN_VALUES.index(v)] >= c)
           for v, c in zip(judge.ids, judge.cuts, strict=True)}
    return {"n": len(y), "harmful": int(y.sum()), "any_value": pr(judge.flagged(scores)),
            "per_value": per}


def evaluate(root: Path, model: BuiltinClassifier | None = None,
             progress: Progress | None = None, policy: Path | None = None,
             legacy: bool = True) -> dict[str, Any]:
    """Every held-out figure, as one JSON-ready object: the judge's targets under ``policy``
    (default: the shipped ``default`` policy), then (``legacy``) the earlier figures."""
    model = model or BuiltinClassifier()
    say = progress or (lambda _: None)
    policy = policy or SHIPPED_POLICIES / "default.yaml"
    judge = _Judge(model, policy_thresholds(policy))
    out: dict[str, Any] = {"model": str(model.model_dir), "policy": policy.stem,
                           "operating_rule": model.config.get("operating_rule")}
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
