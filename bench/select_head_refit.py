"""Dev screen of head-row refits (``vilmo.train.head_refit``) for the story foundations.

Each variant ``<heads>@<l2>[x<story weight>][~<reading>]`` (heads joined by ``+``: ``cm``,
``foundation:``, ``topic:``; reading ``all``, ``reply`` or ``both``: ``fit_heads``; ``shipped``
for the shipped rows, or ``--base``'s) is a copy of the shipped weights with those rows refit on
frozen features, recalibrated by the unchanged rule (``recalibrate``), then read on dev only:
the reply and plain rules' dev figures, the heads' dev ROC-AUC, and the written dev stories
(``vilmo/data/judge/stories_dev.jsonl``: train-split stories that no training row continues)
per foundation, the foundation's score of violating against upholding continuations, after
the story and alone, as ``vilmo eval classifier`` reads the test stories. Not a test: it
writes weights to ``--work`` and takes 4 - 6 minutes a variant on the shared 2-core host.

    python bench/select_head_refit.py shipped cm@0.004215 foundation:@0.004215
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.datasets import readers as data
from vilmo.evaluation import metrics
from vilmo.evaluation.prompts import moral_stories
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.train.classifier import recalibrate
from vilmo.train.examples import story_text
from vilmo.train.head_refit import fit_heads, selected, training_examples

SHIPPED = Path(__file__).resolve().parents[1] / "vilmo" / "models" / "value_classifier"
FOUNDATIONS = ("mft.care", "mft.fairness", "mft.loyalty", "mft.authority", "mft.sanctity")


def story_figures(out_dir: Path) -> dict[str, Any]:
    """Dev stories: per foundation, ROC-AUC of its score, after the story and alone."""
    prompts = {p.id: story_text(str(p.messages[-1]["content"])) for p in moral_stories()}
    rows = data.judge_rows("stories_dev")
    y = np.array([float(bool(r["violates"])) for r in rows])
    model = BuiltinClassifier(out_dir, cache_size=0, threads=1)
    out: dict[str, Any] = {}
    for name, with_story in (("after_story", True), ("alone", False)):
        items = [ScoreInput(str(r["continuation"]),
                            prompts[str(r["story_id"])] if with_story else None) for r in rows]
        scores = np.asarray([[s.violation[v] for v in BUILTIN_VALUES]
                             for s in model.score(items, BUILTIN_VALUES)])
        per = {}
        for f in FOUNDATIONS:
            sel: np.ndarray = np.array([r["foundation"] == f for r in rows], dtype=bool)
            per[f] = round(float(metrics.roc_auc(scores[sel][:, BUILTIN_VALUES.index(f)],
                                                 y[sel])), 4)
        flagged = np.asarray((scores >= 0.5).any(axis=1), dtype=bool)
        out[name] = {"auc": per, "mean": round(float(np.mean(list(per.values()))), 4),
                     "violating_flagged": int(flagged[y == 1].sum()),
                     "upholding_flagged": int(flagged[y == 0].sum())}
    return out


def run(variant: str, work: Path, root: Path, features: dict[Any, np.ndarray],
        base: Path = SHIPPED, reply_features: dict[Any, np.ndarray] | None = None,
        ) -> dict[str, Any]:
    """One variant: copy ``base``, refit (pulled towards ``base``'s rows), recalibrate, read
    dev."""
    target = work / (variant.replace(":", "").replace("+", "_").replace("@", "_")
                     .replace("~", "_"))
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base, target)
    fit: dict[str, Any] = {}
    if variant != "shipped":
        heads_part, pull = variant.split("@")
        pull, _, reading = pull.partition("~")
        l2, _, weight = pull.partition("x")
        train, names = training_examples(root, target)
        fit = fit_heads(target, train, names, selected(names, heads_part.split("+")),
                        float(l2), features, float(weight or 1), reading or "all",
                        reply_features)
    config = recalibrate(root, target, progress=False)
    rule = {k: config[k] for k in ("operating_rule", "plain_operating_rule")}
    result = {"variant": variant, "base": str(base), "fit": fit, "rule": rule,
              "objective": round(rule["operating_rule"]["dev_harmful_flagged"]
                                 - rule["operating_rule"]["dev_refused_flagged"], 4),
              "plain_objective": round(rule["plain_operating_rule"]["dev_harmful_flagged"]
                                       - rule["plain_operating_rule"]["dev_refused_flagged"], 4),
              "dev_auc": {k: v for k, v in config["dev_auc"].items()
                          if k == "cm" or k.startswith("foundation:")},
              "stories": story_figures(target), "dir": str(target)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--work", type=Path, default=Path("/tmp/head_refit"))
    parser.add_argument("--features", type=Path, default=Path("/tmp/head_refit/features.pkl"))
    parser.add_argument("--base", type=Path, default=SHIPPED,
                        help="weights folder to copy and pull the refit rows towards")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    root = data.data_dir()
    caches: dict[Path, dict[Any, np.ndarray]] = {args.features: {},
                                                 args.features.with_suffix(".reply.pkl"): {}}
    for path, cache in caches.items():
        if path.exists():
            cache.update(pickle.loads(path.read_bytes()))
    features, reply_features = caches.values()
    for variant in args.variants:
        before = [len(c) for c in caches.values()]
        result = run(variant, args.work, root, features, args.base, reply_features)
        for (path, cache), n in zip(caches.items(), before, strict=True):
            if len(cache) > n:
                path.write_bytes(pickle.dumps(cache))
        print(json.dumps(result), flush=True)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
