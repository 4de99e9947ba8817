"""The value classifier seam: texts and value ids in, violation probabilities out.

Every judge (the built-in encoder, the zero-shot scorer for custom principles, the LLM judge,
a policy's combination of them, a test fake) implements ``ValueClassifier``: one synchronous,
batch-first method. The proxy reaches it through ``vilmo.judge.batcher.MicroBatcher``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from vilmo.errors import VilmoError


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """A reply to judge, and the prompt that led to it when known (it sharpens the stance)."""

    response: str
    prompt: str | None = None


_UNREAD = frozenset("ZCM")
"""Unicode category classes that uncased WordPiece drops: separators, control/format, marks."""


def given_prompt(prompt: str | None) -> str | None:
    """The prompt a text answers, or None: a prompt the encoder's tokenizer reads as nothing
    (whitespace, control and format characters such as a zero-width space or a BOM,
    combining marks, which uncased WordPiece strips) is no prompt, so the text is a plain one,
    read and measured as such."""
    if prompt and any(unicodedata.category(c)[0] not in _UNREAD for c in prompt):
        return prompt
    return None


@dataclass(frozen=True, slots=True)
class ValueScores:
    """One reply's scores: violation probability per value id (0..1), and for Schwartz values
    the probability that the reply upholds the value."""

    violation: dict[str, float]
    upholds: dict[str, float] = field(default_factory=dict)

    def violations(self, thresholds: Mapping[str, float] | float = 0.5) -> list[str]:
        """The ids at or above their threshold, in score order (highest first)."""
        return scores_to_violations(self.violation, thresholds)


class ClassifierError(VilmoError, RuntimeError):
    """A judge could not produce a score; never to be read as a pass."""


class UnknownValue(VilmoError, KeyError):
    """A value id this classifier cannot judge."""


@runtime_checkable
class ValueClassifier(Protocol):
    """Judges replies against values. ``score`` returns one ValueScores per item, in order,
    each holding every requested id; it raises ``UnknownValue`` for ids it cannot judge and
    ``ClassifierError`` when judging fails."""

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        ...


def scores_to_violations(scores: Mapping[str, float],
                         thresholds: Mapping[str, float] | float = 0.5,
                         default: float = 0.5) -> list[str]:
    """Ids whose score is at or above their threshold (a mapping, or one number for all)."""
    def limit(value_id: str) -> float:
        if isinstance(thresholds, Mapping):
            return thresholds.get(value_id, default)
        return thresholds

    hits = [(s, v) for v, s in scores.items() if s >= limit(v)]
    return [v for _, v in sorted(hits, key=lambda t: (-t[0], t[1]))]
