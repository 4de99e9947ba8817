"""A training pilot for the value classifier: does a recipe change move the dev figures?
(A pilot measurement on the dev split, not a test, and never on held-out data.)

Trains ``vilmo.train.classifier.fit_network`` on a subset of the training sources (default:
ETHICS commonsense and ValueEval, the two with unmet targets), then reads the dev split through
the shipped pooling (``BuiltinClassifier.pooled_logits``, fp32, uncalibrated) and prints one JSON
object: ``cm`` dev accuracy at logit 0 (short and long scenarios apart) and AUC, ValueEval dev
mean AUC and macro-F1 with thresholds fitted on one half of dev and scored on the other (mean of
20 random halvings). The model card's capacity pilots were run with:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/pilot_classifier.py --frozen-layers 3 --bf16
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pilot_classifier.py --frozen-layers 0 --bf16
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pilot_classifier.py --frozen-layers 3 --bf16 --virtue
    HF_HUB_OFFLINE=1 .venv/bin/python bench/pilot_classifier.py --frozen-layers 0 --bf16 \\
        --virtue --sources cm --epochs 6
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VICES = frozenset((
    "selfish", "callous", "malice", "meanness", "rude", "prejudiced", "dishonorable",
    "merciless", "spiteful", "insulting", "abusive", "pitiless", "coldhearted", "ruthless",
    "disloyal", "dishonest", "deceptive", "cruel", "unkindness", "hateful", "violent",
    "terroristic", "wrathful", "avenging", "revenging", "greedy", "unethical",
    "disrespectful", "derogatory", "dishonesty", "fibbing", "selfishness", "disrespect",
    "unprincipled", "mean", "rudeness",
))
"""ETHICS virtue traits that name a clearly wrong way to act (weak label: the scenario is
wrong)."""
VIRTUES = frozenset((
    "generous", "caring", "helpful", "truthful", "selfless", "humane", "empathetic",
    "forgiving", "honorable", "benevolent", "respectful", "honest", "charitable",
    "merciful", "compassionate", "considerate", "courteous", "fair", "just", "decent",
    "good-hearted", "giving", "nurturing", "kindness", "generosity", "trustworthy", "kind",
    "heroic",
))
"""Traits that name a clearly good way to act (weak label: the scenario is not wrong)."""


def virtue_examples(root: Path) -> list[Any]:
    """Weak ``cm`` labels from ETHICS virtue train: a scenario whose fitting trait is a clear
    vice is wrong, one whose fitting trait is a clear virtue is not; other traits are skipped.
    Scenarios in the dev bucket are left out."""
    from vilmo.datasets.readers import Example, split_of

    out = []
    with (root / "ethics" / "virtue" / "virtue_train.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            scenario, trait = (x.strip() for x in row["scenario"].split("[SEP]"))
            if row["label"] != "1" or split_of(scenario, 0, 10) != "train":
                continue
            if trait.lower() in VICES | VIRTUES:
                out.append(Example(scenario, None, {"cm": float(trait.lower() in VICES)},
                                   "virtue"))
    return out


def dev_figures(model: Any, dev: list[Any], names: list[str], root: Path) -> dict[str, float]:
    from vilmo.datasets.readers import VALUEEVAL_CATEGORIES
    from vilmo.evaluation import metrics
    from vilmo.judge.classifier import ScoreInput

    out: dict[str, float] = {}
    cm = [e for e in dev if e.source == "cm"]
    logit = model.pooled_logits([ScoreInput(e.response) for e in cm])[:, names.index("cm")]
    gold = np.array([e.labels["cm"] > 0.5 for e in cm])
    with (root / "ethics" / "commonsense" / "cm_test.csv").open(encoding="utf-8") as fh:
        short_of = {r["input"]: r["is_short"] == "True" for r in csv.DictReader(fh)}
    short = np.array([short_of[e.response] for e in cm])
    right = (logit >= 0) == gold
    out |= {"cm_dev_n": len(cm), "cm_dev_accuracy": float(right.mean()),
            "cm_dev_short_accuracy": float(right[short].mean()),
            "cm_dev_long_accuracy": float(right[~short].mean()),
            "cm_dev_auc": metrics.roc_auc(logit, gold)}

    args = [e for e in dev if e.source == "valueeval"]
    cols = [names.index(f"valueeval:{c}") for c in VALUEEVAL_CATEGORIES]
    probs = metrics.sigmoid(model.pooled_logits(
        [ScoreInput(e.response, e.prompt) for e in args])[:, cols])
    labels = np.array([[e.labels[f"valueeval:{c}"] for c in VALUEEVAL_CATEGORIES]
                       for e in args])
    halves = np.random.default_rng(0)
    f1s = []
    for _ in range(20):
        order = halves.permutation(len(args))
        fit, score = order[: len(args) // 2], order[len(args) // 2:]
        cuts = np.array(metrics.shrunk_f1_thresholds(probs[fit], labels[fit]))
        f1s.append(metrics.macro_f1(probs[score] >= cuts, labels[score]))
    out |= {"valueeval_dev_n": len(args),
            "valueeval_dev_mean_auc": float(np.nanmean(
                [metrics.roc_auc(probs[:, j], labels[:, j]) for j in range(len(cols))])),
            "valueeval_dev_twofold_macro_f1": float(np.mean(f1s)),
            "valueeval_dev_twofold_macro_f1_sd": float(np.std(f1s))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frozen-layers", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sources", default="cm,valueeval",
                    help="training sources to keep (see vilmo.train.examples)")
    ap.add_argument("--virtue", action="store_true", help="add weak cm labels from ETHICS virtue")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None, help="train on this many (smoke)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from vilmo.datasets.readers import data_dir
    from vilmo.judge.embedder import packaged_model_path
    from vilmo.judge.heads import head_names
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.judge.value_net import ValueNet, WindowSpec, load_base
    from vilmo.train.classifier import TrainSettings, fit_network, write_network
    from vilmo.train.examples import build

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    root = data_dir(args.data_dir)
    settings = TrainSettings(epochs=args.epochs, seed=args.seed, n_frozen=args.frozen_layers,
                             bf16=args.bf16)
    train, dev = build(root, settings.sizes, settings.seed, settings.valueeval_dev_by)
    keep = set(args.sources.split(","))
    train = [e for e in train if e.source in keep] + (virtue_examples(root) if args.virtue
                                                      else [])
    if args.limit:
        train = random.Random(args.seed).sample(train, min(args.limit, len(train)))
    names = list(head_names())
    bert, tokenizer = load_base(packaged_model_path())
    net = ValueNet(bert, len(names), settings.n_frozen)
    started = time.monotonic()
    losses = fit_network(net, tokenizer, train, names, settings, random.Random(args.seed))
    seconds = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="vilmo-pilot-") as tmp:
        write_network(Path(tmp), net, names,
                      WindowSpec(settings.max_length, fine_length=settings.fine_length))
        model = BuiltinClassifier(tmp, quantize=False, cache_size=0)
        figures = dev_figures(model, dev, names, root)
    print(json.dumps({"settings": vars(args), "train_examples": len(train),
                      "train_seconds": round(seconds), "final_loss": float(np.mean(losses[-100:])),
                      **{k: round(v, 4) if isinstance(v, float) else v
                         for k, v in figures.items()}}, indent=1))


if __name__ == "__main__":
    main()
