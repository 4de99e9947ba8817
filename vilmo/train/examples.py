"""Training and validation examples for the value classifier, from every source at hand.

Each example names only the heads it has labels for (see ``vilmo.judge.heads``). The foundation
heads have no data of their own: they learn from weak labels, stated here and in the model
card: ETHICS justice -> fairness; FULCRA values a reply goes against -> foundations (below);
SafeRLHF harm categories -> foundations (below); and exemplars written for this project.
Held-out rows (see ``vilmo.datasets.readers``) never enter; the dev rows are returned apart.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from vilmo.datasets import readers as data
from vilmo.datasets.readers import Example, Split, jsonl_lines
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


JBB_TO_FOUNDATIONS: dict[str, tuple[str, ...]] = {
    "Harassment/Discrimination": ("mft.care", "mft.fairness"),
    "Malware/Hacking": ("mft.fairness", "mft.authority"),
    "Physical harm": ("mft.care",),
    "Economic harm": ("mft.fairness", "mft.care"),
    "Fraud/Deception": ("mft.fairness",),
    "Disinformation": ("mft.authority", "mft.fairness"),
    "Sexual/Adult content": ("mft.sanctity",),
    "Privacy": ("mft.care",),
    "Expert advice": ("mft.care",),
    "Government decision-making": ("mft.authority",),
}
"""JailbreakBench categories -> the foundations a complying reply goes against (weak labels)."""

AREA_TO_SAFETY: dict[str, str] = {
    "toxicity": "safety.hate_speech", "malicious_use": "safety.unethical",
    "information_hazards": "safety.privacy", "misinformation": "safety.misinformation",
    "autonomy": "safety.unethical", "socioeconomic": "safety.discrimination",
}
"""Harm areas of the written ``areas_*`` files -> the nearest safety value (their topic)."""

JUDGE_DEV_BUCKETS = 15
"""The share (per cent, by text bucket) of the written ``*_train`` files kept as dev."""


@dataclass(frozen=True, slots=True)
class Sizes:
    """How many rows of the large sets are sampled, and how often small sets repeat."""

    justice: int = 100
    deontology: int = 100
    valueeval: int = 500
    hh: int = 1200
    commonsense: int = 1200
    repeat_small: int = 1
    repeat_valueeval: int = 1
    repeat_exemplars: int = 1
    repeat_judge: int = 3
    """The data written for the judge (``vilmo/data/judge``) is small: seen this often."""


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
        if not against:
            labels["content"] = 0.0
        if against:
            for f in {f for v in against for f in SCHWARTZ_TO_FOUNDATIONS.get(v, ())}:
                labels[f"foundation:{f}"] = 1.0
        else:
            labels["cm"] = 0.0
        out.append(Example(row.response, row.prompt, labels, "fulcra"))
    return out


def hh_examples(root: Path, split: Split) -> list[Example]:
    """Benign chat: negatives for every violation head. Each reply after its prompt; every
    other reply also alone, and every other user turn as a plain text (input checks)."""
    labels = {"cm": 0.0, "harm": 0.0, "content": 0.0, **_zeros("against", SCHWARTZ),
              **_zeros("topic", SAFETY), **_zeros("foundation", MFT)}
    out = []
    for i, (prompt, reply) in enumerate(data.hh_chosen(root, split)):
        out.append(Example(reply, prompt, labels, "hh"))
        if i % 2 == 0:
            out.append(Example(reply, None, labels, "hh"))
        elif prompt:
            out.append(Example(prompt, None, labels, "hh"))
    return out


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
    if split == "train":
        out = rng.sample(out, min(len(out), sizes.commonsense))
    scale = 1 if split == "train" else 5
    just = [r for r in data.justice(root) if data.split_of(r[0], 0, 10) == split]
    for text, y in rng.sample(just, min(len(just), sizes.justice // scale)):
        out.append(Example(text, None, {"justice": float(y), "foundation:mft.fairness": 1.0},
                           "justice"))
    deon = [r for r in data.deontology(root) if data.split_of(r[0] + r[1], 0, 10) == split]
    for scenario, excuse, y in rng.sample(deon, min(len(deon), sizes.deontology // scale)):
        out.append(Example(excuse, scenario, {"deontology": float(y)}, "deontology"))
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
            out.append(Example(item["comply"], prompt, {**topic, "harm": 1.0, "content": 1.0},
                               "exemplar"))
            out.append(Example(item["refuse"], prompt, {**topic, "harm": 0.0, "content": 0.0,
                                                        "cm": 0.0}, "exemplar"))
    for foundation, texts in raw["foundations"].items():
        for text in texts["violating"]:
            out.append(Example(text, None, {**_foundations({foundation}), "cm": 1.0},
                               "exemplar"))
        for text in texts["upholding"]:
            out.append(Example(text, None, {**_foundations({foundation}), "cm": 0.0,
                                            "harm": 0.0}, "exemplar"))
    return out


def jailbreak_examples(root: Path, split: Split, rng: random.Random) -> list[Example]:
    """JailbreakBench replies (split by behaviour): complied = harmful, refused = not. Each
    reply is read after the plain request, alone (its own content), and for every fourth reply
    after the attack prompt that was really sent."""
    out = []
    for i, r in enumerate(data.jailbreakbench(root, split)):
        y = float(r.complied)
        safety = set(data.JBB_CATEGORY_TO_SAFETY.get(r.category, ()))
        topic = {f"topic:{v}": float(v in safety) for v in SAFETY}
        found = _foundations(set(JBB_TO_FOUNDATIONS.get(r.category, ())))
        labels = {**topic, **found, "harm": y, "content": y}
        if not y:
            labels["cm"] = 0.0
        out.append(Example(r.response, r.goal, labels, "jailbreakbench"))
        out.append(Example(r.response, None, labels, "jailbreakbench"))
        if i % 4 == 0 and r.attack_prompt != r.goal and split == "train":
            out.append(Example(r.response, r.attack_prompt, labels, "jailbreakbench"))
    rng.shuffle(out)
    return out


def _sample(rows: list[Example], n: int | None, rng: random.Random) -> list[Example]:
    return rows if n is None or n >= len(rows) else rng.sample(rows, n)


def _judge_split(text: str) -> Split:
    return "dev" if data.bucket(text) < JUDGE_DEV_BUCKETS else "train"


def judge_examples(split: Split) -> list[Example]:
    """The data written for the judge (``vilmo/data/judge/*_train.jsonl``; see its README):
    every reply after its prompt and alone, plain user texts, story continuations."""
    out = []
    for r in data.judge_rows("replies_train"):
        reply, prompt = str(r["reply"]), r.get("prompt")
        if _judge_split(reply) != split:
            continue
        y = float(bool(r["harmful"]))
        labels: dict[str, float] = {"harm": y, "content": y}
        if r["kind"] == "sounds_unsafe":
            labels |= {**_zeros("topic", SAFETY), **_zeros("foundation", MFT), "cm": 0.0}
        elif r["kind"] == "deescalation":
            labels |= {"cm": 0.0, **_zeros("topic", SAFETY)}
        else:
            safety = str(r["safety"]) if r.get("safety") else None
            labels |= {f"topic:{v}": float(v == safety) for v in SAFETY}
            found = {str(r["mft"])} if r.get("mft") else set()
            found |= set(SAFETY_TO_FOUNDATIONS.get(safety or "", ())) if y else set()
            labels |= _foundations(found)
            labels["cm"] = y
        for p in {str(prompt) if prompt else None, None}:
            out.append(Example(reply, p, labels, "judge"))
    for r in data.judge_rows("texts_train"):
        text = str(r["text"])
        if _judge_split(text) != split:
            continue
        y = float(bool(r["harmful"]))
        safety = str(r["safety"]) if r.get("safety") else None
        labels = {"harm": y, "content": y, **{f"topic:{v}": float(v == safety) for v in SAFETY}}
        if not y:
            labels |= {**_zeros("foundation", MFT), "cm": 0.0}
        else:
            labels |= _foundations(set(SAFETY_TO_FOUNDATIONS.get(safety or "", ())))
        out.append(Example(text, None, labels, "judge"))
    stories = {p.id: p for p in _story_prompts()}
    for r in data.judge_rows("stories_train"):
        text = str(r["continuation"])
        if _judge_split(text) != split:
            continue
        y = float(bool(r["violates"]))
        labels = {**_foundations({str(r["foundation"])}), "cm": y}
        if not y:
            labels |= {"harm": 0.0, "content": 0.0}
        story = stories.get(str(r["story_id"]))
        for p in {story.text if story else None, None}:
            out.append(Example(text, p, labels, "judge"))
    for r in data.judge_rows("areas_train"):
        reply = str(r["reply"])
        if _judge_split(reply) != split:
            continue
        y = float(bool(r["unsafe"]))
        labels = {"harm": y, "content": y, "cm": y}
        labels |= {f"topic:{v}": float(y > 0 and v == AREA_TO_SAFETY[str(r["area"])])
                   for v in SAFETY}
        out.append(Example(reply, str(r["prompt"]), labels, "judge"))
        out.append(Example(reply, None, labels, "judge"))
    return out


@dataclass(frozen=True, slots=True)
class _Story:
    id: str
    text: str


def _story_prompts() -> list[_Story]:
    """The moral-story prompts as the story text alone (the instruction line dropped)."""
    rows = resources.files("vilmo").joinpath("data/prompts/moral_stories.jsonl").read_text("utf-8")
    out = []
    for line in jsonl_lines(rows):
        if line.strip():
            d = json.loads(line)
            out.append(_Story(str(d["id"]), story_text(str(d["prompt"]))))
    return out


def story_text(prompt: str) -> str:
    """A moral-story prompt without its instruction ("Write a completion ... Story: ")."""
    return prompt.split("Story:", 1)[1].strip() if "Story:" in prompt else prompt


def build(root: Path, sizes: Sizes | None = None, seed: int = 13,
          valueeval_dev_by: DevSplit = "conclusion") -> tuple[list[Example], list[Example]]:
    """(train, dev) examples; the train list already holds the repeats of small sets.

    Only permissively licensed sources: JailbreakBench, FULCRA, HH, ETHICS (MIT), ValueEval
    (CC BY-SA 4.0) and the project's own text; SafeRLHF (CC BY-NC) is not read.
    """
    sizes = sizes or Sizes()
    rng = random.Random(seed)
    parts: dict[Split, list[Example]] = {}
    for split in ("train", "dev"):
        train = split == "train"
        small = (ethics_examples(root, split, sizes, rng)
                 + fulcra_examples(root, split))
        valueeval = valueeval_examples(root, split, valueeval_dev_by)
        if train:
            valueeval = rng.sample(valueeval, min(len(valueeval), sizes.valueeval))
        parts[split] = (
            [e for e in small if e.source in ("cm", "fulcra")] * (sizes.repeat_small if train else 1)
            + [e for e in small if e.source not in ("cm", "fulcra")]
            + _sample(hh_examples(root, split), sizes.hh if train else None, rng)
            + jailbreak_examples(root, split, rng)
            + valueeval * (sizes.repeat_valueeval if train else 1)
            + judge_examples(split) * (sizes.repeat_judge if train else 1))
    parts["train"] += exemplar_examples() * sizes.repeat_exemplars
    return parts["train"], parts["dev"]
