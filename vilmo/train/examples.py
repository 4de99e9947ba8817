"""Training and validation examples for the value classifier, from every source at hand.

Each example names only the heads it has labels for (see ``vilmo.judge.heads``). The foundation
heads have no data of their own: they learn from weak labels, stated here and in the model
card: ETHICS justice -> fairness; FULCRA values a reply goes against -> foundations (below);
SafeRLHF harm categories -> foundations (below); and exemplars written for this project.
Held-out rows (see ``vilmo.datasets.readers``) never enter; the dev rows are returned apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from vilmo.datasets import readers as data
from vilmo.datasets.readers import Example, Split
from vilmo.judge.heads import MFT, SAFETY, SCHWARTZ

SCHWARTZ_TO_FOUNDATIONS: dict[str, tuple[str, ...]] = {
    "schwartz.universalism": ("mft.fairness", "mft.care"),
    "schwartz.benevolence": ("mft.care", "mft.loyalty"),
    "schwartz.conformity": ("mft.authority",),
    "schwartz.security": ("mft.care", "mft.authority"),
    "schwartz.tradition": ("mft.sanctity", "mft.authority"),
    "schwartz.power": ("mft.fairness",),
    "schwartz.achievement": ("mft.fairness",),
    "schwartz.self_direction": ("mft.fairness",),
}

SAFETY_TO_FOUNDATIONS: dict[str, tuple[str, ...]] = {
    "safety.violence": ("mft.care",),
    "safety.unethical": ("mft.fairness",),
    "safety.hate_speech": ("mft.care", "mft.fairness"),
    "safety.discrimination": ("mft.fairness",),
    "safety.financial_crime": ("mft.fairness", "mft.authority"),
    "safety.privacy": ("mft.care",),
    "safety.drugs_weapons": ("mft.sanctity", "mft.authority"),
    "safety.controversial_topics": ("mft.authority",),
    "safety.misinformation": ("mft.authority",),
    "safety.sexual_content": ("mft.sanctity",),
    "safety.terrorism": ("mft.authority", "mft.loyalty"),
    "safety.animal_abuse": ("mft.care",),
    "safety.self_harm": ("mft.care", "mft.sanctity"),
    "safety.child_abuse": ("mft.care", "mft.sanctity"),
}

VALUEEVAL_TO_SCHWARTZ: dict[str, str] = {
    c: v for c, v in data.VALUEEVAL_TO_SCHWARTZ.items() if c not in data.AMBIGUOUS_VALUEEVAL}


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many rows of the large sets are sampled, and how often small sets repeat."""

    justice: int = 1500
    deontology: int = 1500
    saferlhf: int = 3000
    repeat_small: int = 2
    repeat_valueeval: int = 2
    repeat_exemplars: int = 3


def _zeros(prefix: str, ids: tuple[str, ...]) -> dict[str, float]:
    return {f"{prefix}:{v}": 0.0 for v in ids}


def _foundations(positive: set[str]) -> dict[str, float]:
    return {f"foundation:{f}": float(f in positive) for f in MFT}


def fulcra_examples(root: Path, split: Split) -> list[Example]:
    out = []
    for row in data.fulcra(root, split):
        against = {v for v, s in row.values.items() if s < 0}
        labels = {f"against:{v}": float(v in against) for v in SCHWARTZ}
        labels |= {f"upholds:{v}": float(row.values.get(v) == 1) for v in SCHWARTZ}
        labels["harm"] = float(bool(against))
        if against:
            for f in {f for v in against for f in SCHWARTZ_TO_FOUNDATIONS.get(v, ())}:
                labels[f"foundation:{f}"] = 1.0
        else:
            labels["cm"] = 0.0
        out.append(Example(row.response, row.prompt, labels, "fulcra"))
    return out


def hh_examples(root: Path, split: Split) -> list[Example]:
    """Benign replies: negatives for every violation head."""
    labels = {"cm": 0.0, "harm": 0.0, **_zeros("against", SCHWARTZ), **_zeros("topic", SAFETY),
              **_zeros("foundation", MFT)}
    return [Example(reply, prompt, labels, "hh") for prompt, reply in data.hh_chosen(root, split)]


DevSplit = Literal["conclusion", "premise"]


def valueeval_examples(root: Path, split: Split,
                       dev_by: DevSplit = "conclusion") -> list[Example]:
    """ValueEval training arguments; its validation file is held out whole.

    By default the dev part is drawn by conclusion, so its conclusions are unseen in training,
    as all the validation file's are. With ``dev_by="premise"``, the rule the shipped weights
    were trained with, dev shares conclusions with training and overrates the model (macro-F1
    0.51 on dev against 0.445 on validation).
    """
    out = []
    for arg in data.valueeval(root, "training"):
        key = arg.conclusion if dev_by == "conclusion" else arg.premise
        if data.split_of(key, 0, 10) != split:
            continue
        labels = {f"valueeval:{c}": float(y) for c, y in zip(data.VALUEEVAL_CATEGORIES,
                                                               arg.labels, strict=True)}
        ups: dict[str, float] = {}
        for c, y in zip(data.VALUEEVAL_CATEGORIES, arg.labels, strict=True):
            if c in VALUEEVAL_TO_SCHWARTZ:
                v = VALUEEVAL_TO_SCHWARTZ[c]
                ups[v] = max(ups.get(v, 0.0), float(y))
        labels |= {f"upholds:{v}": y for v, y in ups.items()}
        out.append(Example(arg.premise, arg.prompt, labels, "valueeval"))
    return out


def ethics_examples(root: Path, split: Split, sizes: Sizes, rng: random.Random) -> list[Example]:
    """ETHICS: the train part of cm_test, and samples of justice and deontology train."""
    hard = {text for text, _ in data.commonsense(root, "test_hard")}
    out = [Example(text, None, {"cm": float(y)}, "cm")
           for text, y in data.commonsense(root, "test", split) if text not in hard]
    scale = 1 if split == "train" else 5
    just = [r for r in data.justice(root) if data.split_of(r[0], 0, 10) == split]
    for text, y in rng.sample(just, min(len(just), sizes.justice // scale)):
        out.append(Example(text, None, {"justice": float(y), "foundation:mft.fairness": 1.0},
                           "justice"))
    deon = [r for r in data.deontology(root) if data.split_of(r[0] + r[1], 0, 10) == split]
    for scenario, excuse, y in rng.sample(deon, min(len(deon), sizes.deontology // scale)):
        out.append(Example(excuse, scenario, {"deontology": float(y)}, "deontology"))
    return out


def saferlhf_examples(root: Path, split: Split, sizes: Sizes,
                      rng: random.Random) -> list[Example]:
    """SafeRLHF prompts: which harm is at stake (topic), and so which foundations."""
    rows = [r for r in data.saferlhf(root, "train") if data.split_of(r[0], 0, 10) == split]
    rows = rng.sample(rows, min(len(rows), sizes.saferlhf // (1 if split == "train" else 5)))
    out = []
    for prompt, ids in rows:
        labels = {f"topic:{v}": float(v in ids) for v in SAFETY}
        if ids:
            labels |= _foundations({f for v in ids for f in SAFETY_TO_FOUNDATIONS[v]})
        out.append(Example(prompt, None, labels, "saferlhf"))
    return out


def exemplar_examples() -> list[Example]:
    """The project's own stance exemplars (``vilmo/data/stance_exemplars.yaml``)."""
    raw: dict[str, Any] = yaml.safe_load(
        resources.files("vilmo").joinpath("data/stance_exemplars.yaml").read_text("utf-8"))
    out = []
    for item in raw["pairs"]:
        topic = {**_zeros("topic", SAFETY), f"topic:{item['safety']}": 1.0,
                 **_foundations({item["mft"]})}
        for prompt in (item["prompt"], None):
            out.append(Example(item["comply"], prompt, {**topic, "harm": 1.0}, "exemplar"))
            out.append(Example(item["refuse"], prompt, {**topic, "harm": 0.0, "cm": 0.0},
                               "exemplar"))
    for foundation, texts in raw["foundations"].items():
        for text in texts["violating"]:
            out.append(Example(text, None, {**_foundations({foundation}), "cm": 1.0},
                               "exemplar"))
        for text in texts["upholding"]:
            out.append(Example(text, None, {**_foundations({foundation}), "cm": 0.0,
                                            "harm": 0.0}, "exemplar"))
    return out


def build(root: Path, sizes: Sizes | None = None, seed: int = 13,
          valueeval_dev_by: DevSplit = "conclusion") -> tuple[list[Example], list[Example]]:
    """(train, dev) examples; the train list already holds the repeats of small sets."""
    sizes = sizes or Sizes()
    rng = random.Random(seed)
    parts: dict[Split, list[Example]] = {}
    for split in ("train", "dev"):
        train = split == "train"
        small = (ethics_examples(root, split, sizes, rng)
                 + fulcra_examples(root, split))
        rest = hh_examples(root, split) + saferlhf_examples(root, split, sizes, rng)
        parts[split] = (
            [e for e in small if e.source in ("cm", "fulcra")] * (sizes.repeat_small if train else 1)
            + [e for e in small if e.source not in ("cm", "fulcra")] + rest
            + valueeval_examples(root, split, valueeval_dev_by)
            * (sizes.repeat_valueeval if train else 1))
    parts["train"] += exemplar_examples() * sizes.repeat_exemplars
    return parts["train"], parts["dev"]
