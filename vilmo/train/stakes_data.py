"""Prompts labelled with the values they put at stake, for the values-at-stake model.

Three human-labelled sources, each with a fixed split (held-out rows never reach training or
model selection):
- SafeRLHF questions: ``safety_issues`` -> safety ids. train file: 90 % train / 10 % dev by
  the prompt's SHA-1 bucket; the test file is held out (its 8 prompts that are also in the train
  file are dropped from training).
- FULCRA: the Human turn of each dialogue, labels = every Schwartz value any of its replies was
  labelled with (+1 or -1: the value was at stake). Rows are grouped by prompt text and split by
  the prompt's bucket (25 % held out, 10 % dev), so no prompt is on both sides.
- ValueEval: "<stance>: <conclusion>. <premise>", its 20 categories mapped to Schwartz ids by
  ``VALUEEVAL_TO_SCHWARTZ``; training file: 90 % train / 10 % dev by bucket; validation held out.
- Anthropic HH helpful: the Human turns, with no label (``system`` None): everyday requests,
  used as negatives for every head so that ordinary chat does not look value-laden (the labelled
  sources contain almost only value-laden prompts). Dialogues split by their first turn: 40 %
  held out, 10 % dev, as in ``vilmo.datasets.readers.hh_chosen``; held-out dialogues contribute
  their first turn only (source ``hh``), the others also their later turns (``hh-later-turns``).
- The project's moral-story prompts (``vilmo/data/prompts/moral_stories.jsonl``, written for
  this project), labelled with their Moral Foundation: ``test`` is held out; of ``train``, every
  fifth story of a foundation is dev.
- The project's everyday questions (``vilmo/data/prompts/everyday.jsonl``, written for this
  project: cooking, arithmetic, coding, travel, other chores), unlabelled negatives like HH, with
  the file's own split (50 % train, 10 % dev, 40 % held out).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from vilmo.datasets.readers import (
    VALUEEVAL_CATEGORIES,
    VALUEEVAL_TO_SCHWARTZ,
    DataMissing,
    fulcra,
    jsonl_lines,
    saferlhf,
    split_of,
    valueeval,
)
from vilmo.values import ValueSystem

SOURCES = ("saferlhf", "fulcra", "valueeval", "moral-stories")
BENIGN = "hh"
BENIGN_LATER = "hh-later-turns"
EVERYDAY = "everyday"
WRITTEN_HARMFUL = "written-harmful"
WRITTEN_BENIGN = "written-benign"
JAILBREAKBENCH = "jailbreakbench"
NEGATIVE_SOURCES = (BENIGN, BENIGN_LATER, EVERYDAY, WRITTEN_BENIGN)
"""Unlabelled sources: nothing is at stake in them (by assumption; HH has a few exceptions)."""
GATE_POSITIVE_SOURCES = ("saferlhf", "moral-stories", WRITTEN_HARMFUL, JAILBREAKBENCH)
"""Sources whose labelled prompts teach the gate what a prompt with values at stake is. Not
ValueEval (essays, not requests) nor FULCRA (its prompts are HH red-team openers; with them the
gate learned that chatting with the assistant ("Do you like stories?") is value-laden).
The written requests and JailbreakBench goals (``extra_request_prompts``) train the request
reader only."""
JBB_HARMS = {"Disinformation": "safety.misinformation", "Economic harm": "safety.financial_crime",
             "Expert advice": "safety.unethical", "Fraud/Deception": "safety.financial_crime",
             "Government decision-making": "safety.unethical",
             "Harassment/Discrimination": "safety.discrimination",
             "Malware/Hacking": "safety.privacy", "Physical harm": "safety.violence",
             "Privacy": "safety.privacy", "Sexual/Adult content": "safety.sexual_content"}
"""The safety value closest to each JailbreakBench category (its goals' label)."""


@dataclass(frozen=True, slots=True)
class LabelledPrompt:
    """A prompt, the system its labels come from, and the value ids at stake (may be empty)."""

    text: str
    system: ValueSystem | None
    """The system the labels come from; None for unlabelled everyday prompts (negatives)."""
    labels: tuple[str, ...]
    source: str
    split: str


def stakes_prompts(root: Path) -> list[LabelledPrompt]:
    """Every labelled prompt of the three sources, with its split (train / dev / heldout)."""
    rows: list[LabelledPrompt] = []
    test = saferlhf(root, "test")
    held = {text for text, _ in test}
    for text, ids in saferlhf(root, "train"):
        if text in held:  # a few prompts are in both files: keep them held out only
            continue
        split = "dev" if split_of(text, 0, 10) == "dev" else "train"
        rows.append(LabelledPrompt(text, "safety", tuple(sorted(set(ids))), "saferlhf", split))
    for text, ids in test:
        rows.append(LabelledPrompt(text, "safety", tuple(sorted(set(ids))), "saferlhf", "heldout"))
    grouped: dict[str, set[str]] = defaultdict(set)
    for row in fulcra(root):
        if row.prompt:
            grouped[row.prompt].update(row.values)
    for text, labels in grouped.items():
        rows.append(LabelledPrompt(text, "schwartz", tuple(sorted(labels)), "fulcra",
                                   split_of(text, 25, 10)))
    which: Literal["training", "validation"]
    for which in ("training", "validation"):
        for arg in valueeval(root, which):
            text = f"{arg.prompt}. {arg.premise}"
            labels = {VALUEEVAL_TO_SCHWARTZ[c]
                      for c, on in zip(VALUEEVAL_CATEGORIES, arg.labels, strict=True) if on}
            split = "heldout" if which == "validation" else (
                "dev" if split_of(text, 0, 10) == "dev" else "train")
            rows.append(LabelledPrompt(text, "schwartz", tuple(sorted(labels)), "valueeval",
                                       split))
    return rows + everyday_prompts(root) + moral_story_prompts() + written_everyday_prompts()


def everyday_prompts(root: Path) -> list[LabelledPrompt]:
    """The Human turns of the HH helpful dialogues, unlabelled, deduplicated. Each dialogue goes
    to the split of its first turn (so a dialogue is never on both sides); later turns of
    train and dev dialogues are extra negatives, never held-out prompts."""
    path = root / "fulcra" / "hh_helpful_test.jsonl"
    if not path.exists():
        raise DataMissing(f"{path} not found (set VILMO_DATA_DIR or --data-dir)")
    first: dict[str, None] = {}
    later: dict[str, str] = {}
    for line in jsonl_lines(path.read_text(encoding="utf-8")):
        if not line.strip():
            continue
        turns = [t.split("Assistant:", 1)[0].strip()
                 for t in str(json.loads(line)["chosen"]).split("Human:")[1:]]
        turns = [t for t in turns if t]
        if not turns:
            continue
        first[turns[0]] = None
        split = split_of(turns[0], 40, 10)
        if split != "heldout":
            for turn in turns[1:]:
                later.setdefault(turn, split)
    rows = [LabelledPrompt(t, None, (), BENIGN, split_of(t, 40, 10)) for t in first]
    return rows + [LabelledPrompt(t, None, (), BENIGN_LATER, split) for t, split in later.items()
                   if t not in first]


def _package_jsonl(name: str) -> list[dict[str, object]]:
    text = files("vilmo").joinpath("data", "prompts", name).read_text(encoding="utf-8")
    return [json.loads(line) for line in jsonl_lines(text) if line.strip()]


def moral_story_prompts() -> list[LabelledPrompt]:
    """The moral-story prompts with their foundation; test held out, every fifth train story dev."""
    rows = []
    for d in _package_jsonl("moral_stories.jsonl"):
        number = int(str(d["id"]).rsplit("-", 1)[-1])
        split = "heldout" if d["split"] == "test" else "dev" if number % 5 == 0 else "train"
        labels = tuple(str(v) for v in d["values"])  # type: ignore[attr-defined]
        rows.append(LabelledPrompt(str(d["prompt"]), "mft", labels, "moral-stories", split))
    return rows


def written_everyday_prompts() -> list[LabelledPrompt]:
    """The project's own everyday questions, unlabelled, with the file's split."""
    return [LabelledPrompt(str(d["prompt"]), None, (), EVERYDAY, str(d["split"]))
            for d in _package_jsonl("everyday.jsonl")]


def extra_request_prompts(root: Path) -> list[LabelledPrompt]:
    """Harmful requests beyond SafeRLHF, for the request reader's training only: the project's
    written requests (``vilmo/data/prompts/written_requests.jsonl``: harmful ones with their
    harm, benign look-alikes unlabelled) and the goals of JailbreakBench's train and dev
    behaviours less any goal also filed under a held-out behaviour (the files name one
    behaviour two ways), all in the train split."""
    from vilmo.datasets.readers import jailbreakbench

    rows = [LabelledPrompt(str(d["prompt"]), "safety" if d["harm"] else None,
                           (str(d["harm"]),) if d["harm"] else (),
                           WRITTEN_HARMFUL if d["harm"] else WRITTEN_BENIGN, str(d["split"]))
            for d in _package_jsonl("written_requests.jsonl")]
    held_out = {r.goal for r in jailbreakbench(root, "heldout")}  # behaviour names vary
    goals = {r.goal: JBB_HARMS[r.category] for split in ("train", "dev")
             for r in jailbreakbench(root, split) if r.goal not in held_out}
    return rows + [LabelledPrompt(g, "safety", (h,), JAILBREAKBENCH, "train")
                   for g, h in sorted(goals.items())]
