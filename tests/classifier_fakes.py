"""Scripted stand-ins for the value classifier seam (no model loaded)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from vilmo.judge.classifier import ScoreInput, UnknownValue, ValueScores


class KeywordClassifier:
    """Scores 0.9 for a value when the reply contains ``BAD:<value id>``, else 0.1; records the
    size of every batch it is asked to score."""

    def __init__(self, value_ids: Sequence[str]) -> None:
        self.value_ids = tuple(value_ids)
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        unknown = [v for v in value_ids if v not in self.value_ids]
        if unknown:
            raise UnknownValue(str(unknown))
        with self._lock:
            self.batches.append(len(items))
        return [ValueScores({v: 0.9 if f"BAD:{v}" in it.response else 0.1 for v in value_ids})
                for it in items]


class GatedClassifier(KeywordClassifier):
    """The keyword fake whose first call blocks until ``release`` is set; later calls run (a
    judge busy with a batch, for the batcher's and the guard's overload tests)."""

    def __init__(self, value_ids: Sequence[str]) -> None:
        super().__init__(value_ids)
        self.started = threading.Event()
        self.release = threading.Event()

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(10)
        return super().score(items, value_ids)


class HashEncoder:
    """A deterministic bag-of-words encoder: texts sharing words have high cosine."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.strip(".,!?").encode()).hexdigest(), 16) % 256] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normed: np.ndarray = out / np.maximum(norms, 1e-9)
        return normed
