"""The value classifier seam: texts and value ids in, violation probabilities out.

Every judge (the built-in encoder, the zero-shot scorer for custom principles, the LLM judge,
a policy's combination of them, a test fake) implements ``ValueClassifier``: one synchronous,
batch-first method. The proxy reaches it through ``vilmo.judge.batcher.MicroBatcher``.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from vilmo.errors import VilmoError

if TYPE_CHECKING:
    from vilmo.judge.windowing import WordPieceTokenizer


@dataclass(frozen=True, slots=True)
class ScoreInput:
    """A reply to judge, and the prompt that led to it when known (it sharpens the stance)."""

    response: str
    prompt: str | None = None


_UNREAD = frozenset("ZCM")
"""Unicode category classes that uncased WordPiece drops: separators, control/format, marks
(only where the encoder's tokenizer cannot be loaded: its own reading decides otherwise)."""


def given_prompt(prompt: str | None) -> str | None:
    """The prompt a text answers, or None: a prompt the encoder's tokenizer reads as nothing
    (whitespace, control and format characters such as a zero-width space or a BOM,
    combining marks, private-use characters, U+FFFD, which uncased BERT's normalizer deletes)
    is no prompt, so the text is a plain one, read and measured as such. The tokenizer
    decides, character by character (its normalizer maps each on its own; any character it
    keeps that is not whitespace becomes a token, ``[UNK]`` at least), so that windows
    (``vilmo.judge.windowing.prompt_head``), operating points and cache keys agree."""
    if prompt and any(_read(c) for c in prompt):
        return prompt
    return None


@functools.lru_cache(maxsize=8192)
def _read(char: str) -> bool:
    """Whether the packaged encoder's tokenizer reads ``char`` as a token: printable ASCII
    always is; without the tokenizer, any character outside ``_UNREAD`` but U+FFFD."""
    if "!" <= char <= "~":
        return True
    tokenizer = _tokenizer()
    if tokenizer is None:
        return unicodedata.category(char)[0] not in _UNREAD and char != "\ufffd"
    return bool(tokenizer.encode(char, add_special_tokens=False))


@functools.cache
def _tokenizer() -> WordPieceTokenizer | None:
    """The packaged encoder's tokenizer (the one every built-in reading uses), once."""
    from vilmo.judge.embedder import packaged_model_path
    from vilmo.judge.windowing import WordPieceTokenizer

    try:
        folder = packaged_model_path()
    except (ImportError, OSError):  # no packaged encoder
        return None
    return WordPieceTokenizer(folder) if (folder / "tokenizer.json").is_file() else None


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
