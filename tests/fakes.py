"""Fakes for the gateway's seams. ``KeywordClassifier`` is a deterministic stand-in for the
value classifier in tests of the gateway's enforcement logic (what it does with a verdict);
the real classifier is tested in tests/vilmo and wired in tests/proxy/test_real_classifier.py.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from vilmo.classifier import ClassifierError, ScoreInput, ValueScores

HIGH, LOW = 0.95, 0.02
KEYWORDS = {
    "mft.care": ("punch", "stab", "poison"),
    "safety.violence": ("punch", "stab", "poison"),
    "mft.fairness": ("cheat", "rig the"),
    "custom/no-doses": ("mg of",),
}
CRASH, SLOW = "CLASSIFIER-CRASH", "CLASSIFIER-SLOW"


class KeywordClassifier:
    """Scores HIGH for an id when one of its keywords is in the text, LOW otherwise."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        texts = [item.response for item in items]
        self.calls.append((texts, list(value_ids)))
        if any(CRASH in t for t in texts):
            raise ClassifierError("the fake classifier was told to crash")
        if any(SLOW in t for t in texts):
            time.sleep(3.0)
        return [ValueScores({v: HIGH if any(k in t.lower() for k in KEYWORDS.get(v, ())) else LOW
                             for v in value_ids}) for t in texts]
