"""Which values a prompt puts at stake: a gate and one logistic head per taxonomy value on the
prompt's MiniLM embedding.

The gate answers "is any value at stake at all?" (everyday requests: no; harmful requests and
moral dilemmas: yes) with a probability for an even mix of the two (one hidden layer of 256
ReLU units), and carries the operating threshold chosen on dev (``threshold``). The heads rank
which values: safety from SafeRLHF's harm categories, Schwartz from FULCRA and ValueEval, the
Moral Foundations from the project's moral stories and the foundations of SafeRLHF's harms
(one matrix and one bias). numpy only, well under a millisecond per prompt.
``vilmo/train/stakes.py`` trains it; ``vilmo/models/GENERATOR.md`` states how and what it scores.
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

from vilmo.numeric import sigmoid
from vilmo.types import Matrix
from vilmo.values import VALUES

MODEL_FILE = "stakes.npz"
CARD_FILE = "stakes.json"
DEFAULT_THRESHOLD = 0.5
"""The gate's threshold when the weights' card names none (models without a trained gate)."""

Vector = npt.NDArray[np.float32]


def default_stakes_path() -> Path:
    """The shipped weights inside the package."""
    return Path(str(resources.files("vilmo").joinpath("models", MODEL_FILE)))


@dataclass(frozen=True, slots=True, eq=False)
class Gate:
    """sigmoid(w · relu(H e + c) + b): one hidden layer on the prompt embedding."""

    hidden: Matrix
    hidden_bias: Vector
    weights: Vector
    bias: float

    def __call__(self, embeddings: Matrix) -> Vector:
        """P(at stake), one per embedding row."""
        h = np.maximum(embeddings @ self.hidden.T + self.hidden_bias, 0.0)
        out: Vector = sigmoid(h @ self.weights + self.bias).astype(np.float32)
        return out


@dataclass(frozen=True, slots=True, eq=False)
class StakesModel:
    """P(value at stake | prompt) for every value id, as sigmoid(W · embedding + b)."""

    value_ids: tuple[str, ...]
    weights: Matrix
    """One row per value id, embedding-sized."""
    bias: Vector
    card: Mapping[str, Any] = field(default_factory=dict)
    gate: Gate | None = None
    """None: the gate is the highest value probability (weights without a trained gate)."""
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.weights.shape[0] != len(self.value_ids) or self.bias.shape[0] != len(self.value_ids):
            raise ValueError("stakes weights do not match the value ids")
        if self.gate is not None and self.gate.hidden.shape[1] != self.weights.shape[1]:
            raise ValueError("the gate's weights do not match the embedding size")
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.value_ids)})

    @property
    def threshold(self) -> float:
        """The gate's operating threshold chosen on dev (``DEFAULT_THRESHOLD`` without one)."""
        gate = self.card.get("gate") or {}
        return float(gate.get("threshold", DEFAULT_THRESHOLD))

    def at_stake_probability(self, embedding: Vector) -> float:
        """P(some value is at stake | prompt), for an even prior of everyday and value-laden."""
        if self.gate is None:
            return float(self.probabilities(embedding).max())
        return float(self.gate(np.atleast_2d(embedding))[0])

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
            gate = (Gate(data["gate_hidden"].astype(np.float32),
                         data["gate_hidden_bias"].astype(np.float32),
                         data["gate_weights"].astype(np.float32), float(data["gate_bias"][0]))
                    if "gate_hidden" in data else None)
        sidecar = npz.with_suffix(".json")
        card = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
        return cls(ids, weights, bias, card, gate)

    def save(self, path: str | Path, card: Mapping[str, Any] | None = None) -> None:
        """Write the .npz and, beside it, the JSON sidecar (how it was trained, what it scored)."""
        npz = Path(path)
        npz.parent.mkdir(parents=True, exist_ok=True)
        gate = ({"gate_hidden": self.gate.hidden.astype(np.float16),
                 "gate_hidden_bias": self.gate.hidden_bias,
                 "gate_weights": self.gate.weights,
                 "gate_bias": np.array([self.gate.bias], dtype=np.float32)}
                if self.gate is not None else {})
        np.savez_compressed(npz, value_ids=np.array(self.value_ids), weights=self.weights,
                            bias=self.bias, **gate)  # type: ignore[arg-type]
        npz.with_suffix(".json").write_text(json.dumps(card or self.card, indent=2) + "\n",
                                            encoding="utf-8")

    def logits(self, embeddings: Matrix) -> Matrix:
        """Logits, one row per embedding and one column per value id."""
        out: Matrix = np.atleast_2d(embeddings) @ self.weights.T + self.bias
        return out

    def probabilities(self, embedding: Vector) -> Vector:
        """P(at stake) per value id (in ``value_ids`` order) for one prompt embedding."""
        out: Vector = sigmoid(self.weights @ embedding + self.bias).astype(np.float32)
        return out

    def at_stake(self, embedding: Vector) -> dict[str, float]:
        """The same as a mapping, for reports and debugging."""
        return dict(zip(self.value_ids, map(float, self.probabilities(embedding)), strict=True))

    def similarity_prior(self, similarity: float) -> float:
        """P(at stake) for a principle tied to no value, from its cosine to the prompt."""
        calibration = self.card.get("similarity_calibration") or {"a": 0.0, "b": 0.0}
        z = float(calibration["a"]) * similarity + float(calibration["b"])
        return float(sigmoid(z))

    def index(self, value_id: str | None) -> int | None:
        """Column of a value id, or None (custom principles tied to no value)."""
        return self._index.get(value_id) if value_id else None
