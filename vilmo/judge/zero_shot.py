"""Zero-shot judging of a policy's custom principles by similarity to their examples.

A principle is its text plus example replies that violate it and replies that are acceptable.
A reply's margin is (highest cosine to the text or a violating example) minus (highest cosine
to an acceptable example); a fixed logistic map turns the margin into a probability. The map is
fitted once on principles built from FULCRA's training replies and scored on its dev split
(``vilmo.train.zero_shot``) and stored in ``vilmo/models/zero_shot.json``, so 0.5 is a decision point
and not an arbitrary cosine. Without acceptable examples the margin uses a stated baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.judge.classifier import ScoreInput, UnknownValue, ValueScores
from vilmo.judge.embedder import Embedder, TextEncoder
from vilmo.numeric import sigmoid
from vilmo.types import Matrix

NO_ACCEPTABLE_BASELINE = 0.25
"""Cosine standing in for 'the closest acceptable example' when a principle has none."""


@dataclass(frozen=True, slots=True)
class PrincipleSpec:
    """What the zero-shot judge needs of a principle (``CustomPrinciple`` fits)."""

    id: str
    text: str
    violating: tuple[str, ...] = ()
    acceptable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ZeroShotCalibration:
    slope: float = 12.0
    offset: float = -1.0
    fitted_on: str = "defaults"


def calibration_path() -> Path:
    return Path(str(resources.files("vilmo").joinpath("models", "zero_shot.json")))


def load_calibration(path: Path | None = None) -> ZeroShotCalibration:
    """The committed calibration, or the defaults when there is none."""
    path = path or calibration_path()
    if not path.exists():
        return ZeroShotCalibration()
    raw = json.loads(path.read_text("utf-8"))
    return ZeroShotCalibration(raw["slope"], raw["offset"], raw.get("fitted_on", ""))


class ZeroShotClassifier:
    """Scores replies against custom principles; ``value_ids`` are principle ids."""

    def __init__(self, principles: Sequence[PrincipleSpec], encoder: TextEncoder | None = None,
                 calibration: ZeroShotCalibration | None = None) -> None:
        self.principles = {p.id: p for p in principles}
        self.encoder = encoder or Embedder()
        self.calibration = calibration or load_calibration()
        self._anchors: dict[str, tuple[Matrix, Matrix | None]] = {}

    @classmethod
    def from_policy(cls, policy: Any, encoder: TextEncoder | None = None) -> ZeroShotClassifier:
        """One spec per ``policy.principles`` entry."""
        specs = [PrincipleSpec(p.id, p.text, tuple(p.examples.violating),
                               tuple(p.examples.acceptable)) for p in policy.principles]
        return cls(specs, encoder)

    def _anchor(self, pid: str) -> tuple[Matrix, Matrix | None]:
        if pid not in self._anchors:
            p = self.principles[pid]
            # The rule's own text names the topic, not the stance: it stands in only when
            # there are no violating examples.
            bad = self.encoder.encode(list(p.violating) or [p.text])
            good = self.encoder.encode(list(p.acceptable)) if p.acceptable else None
            self._anchors[pid] = (bad, good)
        return self._anchors[pid]

    def margins(self, items: Sequence[ScoreInput], pid: str) -> Matrix:
        """Similarity margin of each reply towards violating the principle."""
        replies = self.encoder.encode([it.response for it in items])
        bad, good = self._anchor(pid)
        top_bad = (replies @ bad.T).max(axis=1)
        top_good = ((replies @ good.T).max(axis=1) if good is not None
                    else np.full(len(items), NO_ACCEPTABLE_BASELINE, dtype=np.float32))
        out: Matrix = (top_bad - top_good).astype(np.float32)
        return out

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        unknown = [v for v in value_ids if v not in self.principles]
        if unknown:
            raise UnknownValue(f"no custom principle named {unknown}")
        cal = self.calibration
        probs = {pid: sigmoid(cal.slope * self.margins(items, pid) + cal.offset)
                 for pid in value_ids}
        return [ValueScores({pid: float(probs[pid][i]) for pid in value_ids})
                for i in range(len(items))]
