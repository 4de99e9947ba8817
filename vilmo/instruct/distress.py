"""First-person distress and self-harm disclosures ("I feel like ending it all"), which the
request reader reads as nothing at stake: a small detector on what the instruction step already
reads, so that such a prompt gets ``safety.self_harm``'s care principle.

Two logistic regressions (``vilmo/train/stakes_distress.py`` fits them on the written rows of
``vilmo/data/prompts/distress_train.jsonl`` against train benign prompts and look-alikes; the
threshold is chosen on dev benign prompts): a prefilter on the reader's 30 outputs (its gate
and value probabilities, read for every prompt: no extra work), and the detector on the
prompt's plain embedding. The embedding is the reader's second half (2 of 8 layer passes),
which a prompt with nothing at stake otherwise skips; the prefilter lets it run only for the
prompts that look like distress to the reader (on dev, about a quarter of everyday prompts).
Without a reader (the plain encoder), the embedding is always computed and the prefilter is
not used. ``vilmo/models/GENERATOR.md`` states what it scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

MODEL_FILE = "stakes_distress.json"
DISTRESS_VALUES = ("safety.self_harm", "mft.care")
"""What a distress disclosure puts at stake: the first of these the policy weighs (> 0)."""
DISTRESS_PRINCIPLE = "safety.self_harm/respond-to-distress-with-care"
"""The principle a fired detector puts first (where the policy's bank has it)."""
_EPS = 1e-7


def default_distress_path() -> Path:
    """The shipped weights inside the package."""
    return Path(str(resources.files("vilmo").joinpath("models", MODEL_FILE)))


def reader_features(gate: float, probabilities: np.ndarray) -> np.ndarray:
    """The prefilter's input: the logits of the reader's gate and value probabilities. Built
    in place and clipped by ``maximum`` then ``minimum`` (``np.clip``'s values): ``np.r_`` and
    ``np.clip``'s dispatch cost more than the rest for these 30 values, on every prompt's
    path to the upstream call."""
    values = np.asarray(probabilities)
    p = np.empty(values.shape[0] + 1, dtype=np.float64)
    p[0] = gate
    p[1:] = values
    p = np.minimum(np.maximum(p, _EPS), 1.0 - _EPS)
    out: np.ndarray = np.log(p / (1.0 - p))
    return out


@dataclass(frozen=True, slots=True, eq=False)
class DistressDetector:
    """prefilter(reader outputs) >= its threshold and detector(embedding) > its threshold."""

    prefilter_weights: np.ndarray
    prefilter_bias: float
    prefilter_threshold: float
    weights: np.ndarray
    bias: float
    threshold: float
    card: Mapping[str, Any] = field(default_factory=dict)

    def looks_distressed(self, gate: float, probabilities: np.ndarray) -> bool:
        """The prefilter: whether the embedding is worth computing for this prompt."""
        x = reader_features(gate, probabilities)
        if x.shape != self.prefilter_weights.shape:
            return True  # another reader's outputs: let the detector decide
        return float(x @ self.prefilter_weights) + self.prefilter_bias >= self.prefilter_threshold

    def fires(self, vector: np.ndarray) -> bool:
        """The detector on the prompt's plain embedding."""
        return float(np.asarray(vector, dtype=np.float64) @ self.weights) + self.bias \
            > self.threshold

    @property
    def digest(self) -> bytes:
        """What a cached instruction depends on (``VilmoGenerator.models_id``)."""
        return (self.prefilter_weights.tobytes() + self.weights.tobytes()
                + f"{self.prefilter_bias}|{self.prefilter_threshold}|{self.bias}|"
                  f"{self.threshold}".encode())

    @classmethod
    def load(cls, path: str | Path | None = None) -> DistressDetector:
        """The JSON weights (default: the shipped ones)."""
        data = json.loads(Path(path or default_distress_path()).read_text(encoding="utf-8"))
        pre, det = data["prefilter"], data["detector"]
        return cls(np.asarray(pre["weights"], dtype=np.float64), float(pre["bias"]),
                   float(pre["threshold"]), np.asarray(det["weights"], dtype=np.float64),
                   float(det["bias"]), float(det["threshold"]), data.get("card", {}))

    @classmethod
    def shipped(cls) -> DistressDetector | None:
        """The shipped detector, or None where the package has none."""
        path = default_distress_path()
        return cls.load(path) if path.exists() else None

    def save(self, path: str | Path) -> None:
        """Write the weights, thresholds and card as one JSON file."""
        data = {"prefilter": {"weights": [float(v) for v in self.prefilter_weights],
                              "bias": self.prefilter_bias,
                              "threshold": self.prefilter_threshold},
                "detector": {"weights": [float(v) for v in self.weights],
                             "bias": self.bias, "threshold": self.threshold},
                "card": dict(self.card)}
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
