"""The per-target instruction scorer: predicted violation rate of a candidate for a prompt.

Model: logistic regression on the interaction features outer(p, c), plus four main effects
(cosine, stakes probability, log relevance, policy weight), where
  p = [1, stakes probabilities, whitened PCA of the prompt embedding]
  c = [1, value one-hot, style one-hot, whitened PCA of the principle embedding].
So it can learn "for prompts like this, this target misbehaves least under that value / style /
principle". ``vilmo/train/scorer_fit.py`` fits it on one target's replies; weights live in the
run directory (``scorer.npz`` + ``scorer.json``) and are read by path, one file per target.
Prediction is two small matrix products: far below a millisecond for a few dozen candidates.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.errors import VilmoError
from vilmo.instruct.candidates import CandidateSet
from vilmo.instruct.principles import STYLES
from vilmo.instruct.stakes import Vector
from vilmo.numeric import sigmoid
from vilmo.types import Matrix
from vilmo.values import VALUES

SCORER_FILE = "scorer.npz"
VALUE_COLUMNS = {v: i for i, v in enumerate(VALUES)}
N_EXTRA = 4


@dataclass(frozen=True, slots=True)
class Projection:
    """A centred, whitened linear projection (PCA) of embeddings."""

    mean: Vector
    basis: Matrix
    scale: Vector

    def __call__(self, x: Matrix) -> Matrix:
        out: Matrix = (((x - self.mean) @ self.basis) / self.scale).astype(np.float32)
        return out

    @classmethod
    def fit(cls, x: Matrix, k: int) -> Projection:
        mean = x.mean(axis=0)
        k = max(0, min(k, x.shape[0] - 1, x.shape[1]))
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        basis = vt[:k].T.astype(np.float32)
        scale = ((x - mean) @ basis).std(axis=0) + 1e-6
        return cls(mean.astype(np.float32), basis, scale.astype(np.float32))


def prompt_features(cs: CandidateSet, proj: Projection) -> Vector:
    """p = [1, stakes probabilities, projected prompt]."""
    out: Vector = np.concatenate([[1.0], cs.stakes, proj(cs.prompt_vector[None, :])[0]]).astype(
        np.float32)
    return out


def candidate_features(cs: CandidateSet, proj: Projection) -> tuple[Matrix, Matrix]:
    """(c rows, main-effect rows), one row per candidate."""
    n = len(cs.candidates)
    onehots = np.zeros((n, 1 + len(VALUES) + 1 + len(STYLES)), dtype=np.float32)
    onehots[:, 0] = 1.0
    extras = np.zeros((n, N_EXTRA), dtype=np.float32)
    for i, c in enumerate(cs.candidates):
        onehots[i, 1 + VALUE_COLUMNS.get(c.principle.value or "", len(VALUES))] = 1.0
        onehots[i, 2 + len(VALUES) + STYLES.index(c.style)] = 1.0
        extras[i] = (c.similarity, c.stakes, np.log(c.relevance + 1e-6), c.weight)
    rows = [c.row for c in cs.candidates]
    projected = proj(cs.principle_vectors[rows]) if rows else np.zeros((0, len(proj.scale)))
    return np.concatenate([onehots, projected], axis=1).astype(np.float32), extras


def design(cs: CandidateSet, prompt_proj: Projection, principle_proj: Projection) -> Matrix:
    """The full feature rows [vec(outer(p, c)), extras] (for fitting; prediction avoids it)."""
    p = prompt_features(cs, prompt_proj)
    c, extras = candidate_features(cs, principle_proj)
    outer = (p[None, :, None] * c[:, None, :]).reshape(len(c), -1)
    out: Matrix = np.concatenate([outer, extras], axis=1)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class InstructionScorer:
    """sigmoid(pᵀ A c + e · extras + b): the predicted violation rate of each candidate."""

    interaction: Matrix
    """A: rows = prompt features, columns = candidate features."""
    extra: Vector
    intercept: float
    prompt_proj: Projection
    principle_proj: Projection
    card: Mapping[str, Any] = field(default_factory=dict)

    def predict(self, cs: CandidateSet) -> Vector:
        """Predicted violation rate per candidate of the set, in its order."""
        if not cs.candidates:
            return np.zeros(0, dtype=np.float32)
        p = prompt_features(cs, self.prompt_proj)
        c, extras = candidate_features(cs, self.principle_proj)
        z = c @ (p @ self.interaction) + extras @ self.extra + self.intercept
        out: Vector = sigmoid(z).astype(np.float32)
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``scorer.npz`` and ``scorer.json`` (the model card) into a directory."""
        path = Path(directory) / SCORER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"interaction": self.interaction, "extra": self.extra,
                  "intercept": np.array([self.intercept], dtype=np.float32)}
        for name, proj in (("prompt", self.prompt_proj), ("principle", self.principle_proj)):
            arrays |= {f"{name}_mean": proj.mean, f"{name}_basis": proj.basis,
                       f"{name}_scale": proj.scale}
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        path.with_suffix(".json").write_text(json.dumps(dict(self.card), indent=2) + "\n",
                                             encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> InstructionScorer:
        """From ``scorer.npz`` or the directory that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / SCORER_FILE
        if not path.exists():
            raise FileNotFoundError(f"no instruction scorer at {path} (train one with "
                                    "`vilmo train generator --run-dir ...`)")
        try:
            sidecar = path.with_suffix(".json")
            card = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
            with np.load(path, allow_pickle=False) as d:
                prompt, principle = (Projection(d[f"{n}_mean"], d[f"{n}_basis"], d[f"{n}_scale"])
                                     for n in ("prompt", "principle"))
                scorer = cls(d["interaction"], d["extra"], float(d["intercept"][0]), prompt,
                             principle, card)
            scorer.check_shapes()
        except Exception as exc:
            raise ScorerFileError(f"{path} is not a usable instruction scorer "
                                  f"({type(exc).__name__}: {exc}); retrain or copy it again "
                                  "(`vilmo train generator`)") from exc
        return scorer

    def check_shapes(self) -> None:
        """ValueError unless the arrays fit together, so a wrong file fails when it is loaded,
        not on a request."""
        for name, proj in (("prompt", self.prompt_proj), ("principle", self.principle_proj)):
            if (proj.mean.ndim, proj.basis.ndim, proj.scale.ndim) != (1, 2, 1) or \
                    proj.basis.shape != (len(proj.mean), len(proj.scale)):
                raise ValueError(f"{name} projection: shapes {proj.mean.shape}, "
                                 f"{proj.basis.shape}, {proj.scale.shape} do not fit")
        columns = 2 + len(VALUES) + len(STYLES) + len(self.principle_proj.scale)
        if self.interaction.ndim != 2 or self.interaction.shape[1] != columns or \
                self.interaction.shape[0] <= len(self.prompt_proj.scale):
            raise ValueError(f"interaction: shape {self.interaction.shape} does not fit the "
                             f"projections ({columns} candidate features)")
        if self.extra.shape != (N_EXTRA,):
            raise ValueError(f"extra: shape {self.extra.shape}, expected ({N_EXTRA},)")


class ScorerFileError(VilmoError, ValueError):
    """A scorer file that cannot be read or whose arrays do not fit together."""


class ScorerStore:
    """Loaded scorers by path: each target's weights are read once per process."""

    def __init__(self) -> None:
        self._loaded: dict[Path, InstructionScorer] = {}
        self._lock = threading.Lock()

    def get(self, path: str | Path) -> InstructionScorer:
        key = Path(path).expanduser().resolve()
        with self._lock:
            found = self._loaded.get(key)
            if found is None:
                found = self._loaded[key] = InstructionScorer.load(key)
            return found
