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
- Anthropic HH helpful: the first Human turn, with no label (``system`` None): everyday requests,
  used as negatives for every head so that ordinary chat does not look value-laden (the labelled
  sources contain almost only value-laden prompts). 40 % held out, 10 % dev, as in
  ``vilmo.data.hh_chosen``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vilmo.data import (
    VALUEEVAL_CATEGORIES,
    VALUEEVAL_TO_SCHWARTZ,
    DataMissing,
    fulcra,
    saferlhf,
    split_of,
    valueeval,
)
from vilmo.values import ValueSystem

SOURCES = ("saferlhf", "fulcra", "valueeval")
BENIGN = "hh"


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
    return rows + everyday_prompts(root)


def everyday_prompts(root: Path) -> list[LabelledPrompt]:
    """First Human turns of the HH helpful dialogues, unlabelled, deduplicated."""
    path = root / "fulcra" / "hh_helpful_test.jsonl"
    if not path.exists():
        raise DataMissing(f"{path} not found (set VILMO_DATA_DIR or --data-dir)")
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        first = str(json.loads(line)["chosen"]).split("Human:", 1)[-1].split("Assistant:", 1)[0].strip()
        if first:
            seen[first] = None
    return [LabelledPrompt(t, None, (), BENIGN, split_of(t, 40, 10)) for t in seen]
