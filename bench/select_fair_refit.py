"""Dev screen of `cm` / `foundation:fairness` refits with the third round of written fairness
pairs (issue 17 target 4: fairness is the one story foundation under 0.70 held-out).

For each variant (``bench/select_head_refit.py``'s syntax: ``shipped``, ``cm@0.02x20``, ...):
a copy of the shipped weights refit and recalibrated by ``select_head_refit.run`` (on the
calibration dev split, which the new rows change, so ``shipped`` is the baseline read on the
same split), then read as served (``"foundation_reading"``, ``"cm_reading"`` from its config)
by ``select_story_alone``'s measures: the reply and plain rules, JailbreakBench dev (complied
against refused, highest score), the dev stories (``stories_dev.jsonl``) after the story and
alone, and the clear cases under ``default``. Dev only: no held-out set is read. The rule that
picks a variant was written in the model card before any was read. About 10 minutes a variant
on the shared 2-core host.

    python bench/select_fair_refit.py shipped cm@0.02x20 cm@0.02x40
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
from select_head_refit import SHIPPED
from select_head_refit import run as refit
from select_story_alone import FOUNDATIONS, jbb_dev, read_rows, variant_scores
from select_whole_pooling import auc, clear_cases

from vilmo.datasets import readers as data
from vilmo.evaluation.prompts import moral_stories
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier, _points
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.train.examples import story_text
from vilmo.train.operating import GROUPS, dev_groups
from vilmo.verdict import decide


def measure(model_dir: Path) -> dict[str, Any]:
    """The rule's dev figures of the weights in ``model_dir`` at their own points."""
    from dev_split import dev_examples

    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    found = config.get("foundation_reading", "whole")
    cm = config.get("cm_reading", "whole")
    dev, _ = dev_examples(model_dir)
    groups, jbb = dev_groups(dev), jbb_dev(dev)
    prompts = {p.id: story_text(str(p.messages[-1]["content"])) for p in moral_stories()}
    stories = data.judge_rows("stories_dev")
    y = np.array([float(bool(r["violates"])) for r in stories])
    story_items = {
        "after_story": [ScoreInput(str(r["continuation"]), prompts[str(r["story_id"])])
                        for r in stories],
        "alone": [ScoreInput(str(r["continuation"]), None) for r in stories]}
    cases = clear_cases()
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    model = BuiltinClassifier(model_dir, cache_size=0, threads=2)
    everything = [it for g in jbb.values() for it in g] + [
        it for g in story_items.values() for it in g] + [it for _, it, _ in cases]
    rows = read_rows(model, everything)
    both = ((_points(config["operating_points"]), _points(config["sentence_operating_points"])),
            (_points(config["plain_operating_points"]),
             _points(config["plain_sentence_operating_points"])))
    out: dict[str, Any] = {}
    for prefix in ("", "plain_"):
        rule = config[f"{prefix}operating_rule"]
        out[f"{prefix}rule"] = {
            "objective": round(rule["dev_harmful_flagged"] - rule["dev_refused_flagged"], 4),
            **{g: round(rule[f"dev_{g}_flagged"] * rule[f"dev_{g}"]) for g in GROUPS
               if f"dev_{g}" in rule}}
    out["dev_groups"] = {g: len(v) for g, v in groups.items()}
    top = {g: variant_scores(model, rows, items, found, cm, both).max(axis=1)
           for g, items in jbb.items()}
    out["jbb_dev"] = {"auc": round(auc(top["complied"], top["refused"]), 4),
                      "complied_flagged": round(float((top["complied"] >= 0.5).mean()), 4),
                      "refused_flagged": round(float((top["refused"] >= 0.5).mean()), 4)}
    for name, items in story_items.items():
        s = variant_scores(model, rows, items, found, cm, both)
        per = {}
        for f in FOUNDATIONS:
            sel = np.array([r["foundation"] == f for r in stories], dtype=bool)
            col = s[sel][:, BUILTIN_VALUES.index(f)]
            per[f.removeprefix("mft.")] = round(auc(col[y[sel] == 1], col[y[sel] == 0]), 4)
        out[f"stories_{name}"] = per
    case_scores = variant_scores(model, rows, [it for _, it, _ in cases], found, cm, both)
    wrong = []
    for (name, _, bad), row in zip(cases, case_scores, strict=True):
        verdict = decide({v: float(row[BUILTIN_VALUES.index(v)]) for v in policy.values}, policy)
        if bool(verdict.violations) != bad:
            wrong.append(f"{name} {row.max():.3f}")
    out["clear_cases_wrong"] = wrong
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fair_refit"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    feats = args.work / "features.pkl"
    features: dict[Any, np.ndarray] = (pickle.loads(feats.read_bytes()) if feats.exists()
                                       else {})
    root = data.data_dir()
    for variant in args.variants:
        start = time.perf_counter()
        n = len(features)
        result = refit(variant, args.work, root, features, SHIPPED)
        if len(features) > n:
            feats.write_bytes(pickle.dumps(features))
        result.update(measure(Path(result["dir"])))
        result["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
