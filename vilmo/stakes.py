"""Which values a prompt puts at stake: one logistic head per taxonomy value on the prompt's
MiniLM embedding.

Heads of values with human labels (safety from SafeRLHF's harm categories, Schwartz from FULCRA
and ValueEval) are learned; values without labelled prompts (the Moral Foundations) get a
calibrated similarity to the value's prototype (its definition and principles), which is the
same linear form. So the whole model is one matrix and one bias: numpy only, microseconds per
prompt. ``vilmo/train/stakes.py`` trains it; ``vilmo/models/README.md`` states how.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vilmo.types import Matrix
from vilmo.values import VALUES

MODEL_FILE = "stakes.npz"
CARD_FILE = "stakes.json"

Vector = npt.NDArray[np.float32]


def default_stakes_path() -> Path:
    """The shipped weights inside the package."""
    return Path(str(resources.files("vilmo").joinpath("models", MODEL_FILE)))


@dataclass(frozen=True, slots=True, eq=False)
class StakesModel:
    """P(value at stake | prompt) for every value id, as sigmoid(W · embedding + b)."""

    value_ids: tuple[str, ...]
    weights: Matrix
    """One row per value id, embedding-sized."""
    bias: Vector
    card: Mapping[str, Any] = field(default_factory=dict)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.weights.shape[0] != len(self.value_ids) or self.bias.shape[0] != len(self.value_ids):
            raise ValueError("stakes weights do not match the value ids")
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.value_ids)})

    @classmethod
    def uniform(cls, value_ids: Sequence[str] = tuple(VALUES), dimensions: int = 384) -> StakesModel:
        """Every value equally at stake (0.5): the neutral prior, for tests and custom banks."""
        return cls(tuple(value_ids), np.zeros((len(value_ids), dimensions), dtype=np.float32),
                   np.zeros(len(value_ids), dtype=np.float32), {"kind": "uniform"})

    @classmethod
    def load(cls, path: str | Path | None = None) -> StakesModel:
        """Weights from an .npz (default: the shipped ones) and its JSON sidecar if present."""
        npz = Path(path) if path else default_stakes_path()
        with np.load(npz, allow_pickle=False) as data:
            ids = tuple(str(v) for v in data["value_ids"])
            weights = data["weights"].astype(np.float32)
            bias = data["bias"].astype(np.float32)
        sidecar = npz.with_suffix(".json")
        card = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
        return cls(ids, weights, bias, card)

    def save(self, path: str | Path, card: Mapping[str, Any] | None = None) -> None:
        """Write the .npz and, beside it, the JSON sidecar (how it was trained, what it scored)."""
        npz = Path(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(npz, value_ids=np.array(self.value_ids), weights=self.weights,
                            bias=self.bias)
        npz.with_suffix(".json").write_text(json.dumps(card or self.card, indent=2) + "\n",
                                            encoding="utf-8")

    def logits(self, embeddings: Matrix) -> Matrix:
        """Logits, one row per embedding and one column per value id."""
        out: Matrix = np.atleast_2d(embeddings) @ self.weights.T + self.bias
        return out

    def probabilities(self, embedding: Vector) -> Vector:
        """P(at stake) per value id (in ``value_ids`` order) for one prompt embedding."""
        z = np.clip(self.weights @ embedding + self.bias, -30.0, 30.0)
        out: Vector = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return out

    def at_stake(self, embedding: Vector) -> dict[str, float]:
        """The same as a mapping, for reports and debugging."""
        return dict(zip(self.value_ids, map(float, self.probabilities(embedding)), strict=True))

    def similarity_prior(self, similarity: float) -> float:
        """P(at stake) for a principle tied to no value, from its cosine to the prompt."""
        calibration = self.card.get("similarity_calibration") or {"a": 0.0, "b": 0.0}
        z = float(calibration["a"]) * similarity + float(calibration["b"])
        return 1.0 / (1.0 + float(np.exp(-np.clip(z, -30.0, 30.0))))

    def index(self, value_id: str | None) -> int | None:
        """Column of a value id, or None (custom principles tied to no value)."""
        return self._index.get(value_id) if value_id else None
