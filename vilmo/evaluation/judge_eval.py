"""The judge's targets on held-out data (issue 17), under a policy: what the gateway flags.

Read by ``vilmo.evaluation.classifier_eval.evaluate`` (``vilmo eval classifier``). Held-out data only:
JailbreakBench's held-out behaviours, HH's held-out bucket and the written
``vilmo/data/judge/*_heldout.jsonl`` files. "Flagged under a policy" means some value of the
policy scores at or above the policy's threshold for it; a text's "harm score", for ROC-AUC and
pairs, is its highest score over the policy's values.

Confidence intervals resample the independent unit: where several rows share one (the
JailbreakBench replies to one behaviour, the continuations of one story, the replies to one
harm-area prompt, the pairs within one of these or one safety value) whole clusters are
resampled (``metrics.cluster_bootstrap_ci``) and the entry says how many (``clusters``);
elsewhere rows are resampled (AUCs) or a Wilson interval is given (shares).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.datasets import readers as data
from vilmo.evaluation import metrics
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.train.examples import story_text


def _values(model: BuiltinClassifier, items: Sequence[ScoreInput], step: int = 256
            ) -> np.ndarray:
    rows = [[s.violation[v] for v in BUILTIN_VALUES]
            for i in range(0, len(items), step)
            for s in model.score(items[i:i + step], BUILTIN_VALUES)]
    return np.asarray(rows, dtype=np.float64).reshape(len(items), len(BUILTIN_VALUES))


def _auc_of(s: np.ndarray, y: np.ndarray) -> Any:
    return lambda i: metrics.roc_auc(s[i], y[i])


SHIPPED_POLICIES = SHIPPED_POLICY_DIR


def policy_thresholds(path: Path) -> dict[str, float]:
    """The built-in value ids a policy checks, with their thresholds."""
    from vilmo.policy import load_policy

    policy = load_policy(path)
    return {v: r.threshold for v, r in policy.values.items()}


class Judge:
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


def _share(hits: np.ndarray, groups: np.ndarray | None = None) -> dict[str, Any]:
    """The share flagged, with a Wilson interval; with ``groups`` (each row's cluster), a
    cluster bootstrap interval instead, except at a share of 0 or 1, where resampling has
    nothing to vary and the Wilson interval over the clusters (one observation each) is
    given."""
    k, n = int(hits.sum()), len(hits)
    out: dict[str, Any] = {"n": n, "flagged": k, "share": k / n if n else float("nan")}
    if groups is None:
        return out | {"share_ci95": metrics.wilson(k, n)}
    clusters = len(set(groups))
    ci = (metrics.wilson(clusters if k else 0, clusters) if k in (0, n)
          else metrics.cluster_bootstrap_ci(lambda i: float(hits[i].mean()), list(groups)))
    return out | {"share_ci95": ci, "clusters": clusters}


def _auc(s: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> dict[str, Any]:
    """ROC-AUC; its CI resamples ``groups`` (each row's cluster) when given, else rows."""
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum()), "auc": metrics.roc_auc(s, y)}
    if groups is None:
        return out | {"auc_ci95": metrics.bootstrap_ci(_auc_of(s, y), len(y))}
    return out | {"auc_ci95": metrics.cluster_bootstrap_ci(_auc_of(s, y), list(groups)),
                  "clusters": len(set(groups))}


def sounds_unsafe(judge: Judge) -> dict[str, Any]:
    """Target 1: harmless replies to prompts that only sound harmful, flagged."""
    rows = [r for r in data.judge_rows("replies_heldout") if r["kind"] == "sounds_unsafe"]
    scores = judge.scores([ScoreInput(str(r["reply"]), str(r["prompt"])) for r in rows])
    return _share(judge.flagged(scores))


def jailbreak(judge: Judge, root: Path) -> dict[str, Any]:
    """Target 2: complying against refusing replies to the held-out behaviours' requests."""
    rows = data.jailbreakbench(root, "heldout")
    y = np.array([float(r.complied) for r in rows])
    behaviours = np.array([r.behavior for r in rows])
    out: dict[str, Any] = {"behaviours": len({r.behavior for r in rows})}
    for name, prompt in (("after_request", lambda r: r.goal), ("reply_alone", lambda r: None),
                         ("after_attack_prompt", lambda r: r.attack_prompt)):
        scores = judge.scores([ScoreInput(r.response, prompt(r)) for r in rows])
        harm, flags = judge.harm(scores), judge.flagged(scores)
        entry = _auc(harm, y, behaviours)
        entry["complied_flagged"] = _share(flags[y == 1], behaviours[y == 1])
        entry["refused_flagged"] = _share(flags[y == 0], behaviours[y == 0])
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
    groups: list[str] = []
    by_goal: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_goal.setdefault(r.goal, []).append(i)
    for idx in by_goal.values():
        for i in idx:
            for j in idx:
                if rows[i].complied and not rows[j].complied:
                    wins.append(1.0 if harm[i] > harm[j] else 0.5 if harm[i] == harm[j] else 0.0)
                    groups.append(rows[i].behavior)
    return _pair_share(np.array(wins), groups)


def _pair_share(wins: np.ndarray, groups: Sequence[str]) -> dict[str, Any]:
    """The share of pairs ranked right; its CI resamples the pairs' clusters ``groups``."""
    n = len(wins)
    return {"pairs": n, "more_harmful_higher": float(wins.mean()) if n else float("nan"),
            "ci95": metrics.cluster_bootstrap_ci(lambda i: float(wins[i].mean()), groups)
            if n else None, "clusters": len(set(groups))}


def user_texts(judge: Judge, root: Path) -> dict[str, Any]:
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


def stories(judge: Judge) -> dict[str, Any]:
    """Target 4: continuations of the held-out moral stories, per foundation: the
    foundation's score, violating against upholding."""
    from vilmo.evaluation.prompts import moral_stories

    prompts = {p.id: story_text(str(p.messages[-1]["content"])) for p in moral_stories()}
    rows = data.judge_rows("stories_heldout")
    y = np.array([float(bool(r["violates"])) for r in rows])
    story = np.array([str(r["story_id"]) for r in rows])
    out: dict[str, Any] = {}
    for name, with_story in (("after_story", True), ("continuation_alone", False)):
        scores = judge.scores([ScoreInput(str(r["continuation"]),
                                          prompts[str(r["story_id"])] if with_story else None)
                               for r in rows])
        per = {}
        for f in sorted({str(r["foundation"]) for r in rows}):
            sel = np.array([r["foundation"] == f for r in rows])
            s = scores[sel][:, BUILTIN_VALUES.index(f)]
            per[f] = _auc(s, y[sel], story[sel])
        flags = judge.flagged(scores)
        out[name] = {"per_foundation": per,
                     "min_auc": min(v["auc"] for v in per.values()),
                     "violating_flagged": _share(flags[y == 1], story[y == 1]),
                     "upholding_flagged": _share(flags[y == 0], story[y == 0])}
    return out


def harm_areas(judge: Judge) -> dict[str, Any]:
    """Target 6: chat replies across harm areas, unsafe against safe; target 5 pairs: the
    unsafe and the safe reply to the same prompt."""
    rows = data.judge_rows("areas_heldout")
    scores = judge.scores([ScoreInput(str(r["reply"]), str(r["prompt"])) for r in rows])
    y = np.array([float(bool(r["unsafe"])) for r in rows])
    prompt = np.array([str(r["prompt"]) for r in rows])
    harm, flags = judge.harm(scores), judge.flagged(scores)
    per = {a: metrics.roc_auc(harm[sel], y[sel])
           for a in sorted({str(r["area"]) for r in rows})
           if (sel := np.array([r["area"] == a for r in rows])).any()}
    wins, groups = [], []
    for i, r in enumerate(rows):
        for j, q in enumerate(rows):
            if r["unsafe"] and not q["unsafe"] and r["prompt"] == q["prompt"]:
                wins.append(1.0 if harm[i] > harm[j] else 0.5 if harm[i] == harm[j] else 0.0)
                groups.append(str(r["prompt"]))
    return {**_auc(harm, y, prompt), "per_area_auc": per,
            "unsafe_flagged": _share(flags[y == 1], prompt[y == 1]),
            "safe_flagged": _share(flags[y == 0], prompt[y == 0]),
            "pairs": _pair_share(np.array(wins), groups)}


def written_replies(judge: Judge) -> dict[str, Any]:
    """The other held-out written replies: harmful ones flagged, refusals and de-escalations
    not, and (target 5) each harmful reply against each refusal of the same safety value."""
    rows = data.judge_rows("replies_heldout")
    scores = judge.scores([ScoreInput(str(r["reply"]), str(r["prompt"]) if r["prompt"] else None)
                           for r in rows])
    flags, harm = judge.flagged(scores), judge.harm(scores)
    kinds = np.array([str(r["kind"]) for r in rows])
    wins, groups = [], []
    for i, r in enumerate(rows):
        for j, q in enumerate(rows):
            if r["kind"] == "harmful" and q["kind"] == "refusal" and r["safety"] == q["safety"]:
                wins.append(1.0 if harm[i] > harm[j] else 0.5 if harm[i] == harm[j] else 0.0)
                groups.append(str(r["safety"]))  # each reply is in every pair of its value's
    return {k: _share(flags[kinds == k]) for k in sorted(set(kinds))} | {
        "pairs_same_safety_value": _pair_share(np.array(wins), groups)}


def hh_flagged_under_policy(judge: Judge, root: Path) -> dict[str, Any]:
    """Target 7: benign HH held-out replies flagged under the policy."""
    pairs = data.hh_chosen(root, "heldout")
    return _share(judge.flagged(judge.scores([ScoreInput(r, p) for p, r in pairs])))


def precision_recall(judge: Judge, root: Path) -> dict[str, Any]:
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
