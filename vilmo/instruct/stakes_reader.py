"""The request reader: one int8 encoder pass gives a prompt's embedding and its values at stake.

``vilmo train stakes-reader`` fine-tunes the top layers of all-MiniLM-L6-v2 (the bottom
``n_frozen`` stay the packaged weights) with a gate output ("is any value at stake?") and one
output per taxonomy value (``vilmo/train/stakes_reader.py``). The served graph shares the
frozen bottom layers between two tops: the packaged top layers give the plain sentence
embedding (mean pooled, unit length: what principles are ranked by, the same vector as
``Int8Embedder``'s to int8 rounding), the fine-tuned ones the reader's logits. So the step stays
about one encoder pass. The graph is built from the packaged encoder and the committed layers
by ``vilmo warmup`` (torch needed once) and read with onnxruntime and tokenizers only.

Used as the generator's encoder (``encode``) and its stakes source (``read``); both answer
from one cache per text.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vilmo.judge.embedder import DIMENSIONS, MAX_TOKENS, _LruCache, packaged_model_path
from vilmo.judge.shared_cache import SharedCache, dump_vector, load_vector
from vilmo.judge.windowing import pad_numpy
from vilmo.numeric import sigmoid
from vilmo.types import Matrix
from vilmo.values import VALUES

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from vilmo.judge.value_onnx import Int8Session

KIND = "stakes_reader"
SHARED_KEY_PREFIX = "stakes-reader-int8:"


def default_reader_dir() -> Path:
    """The shipped reader inside the package."""
    return Path(str(resources.files("vilmo").joinpath("models", "stakes_reader")))


def runtime_name() -> str:
    """The runtime the graph is read with (recorded where a threshold is fitted)."""
    from vilmo.judge.value_onnx import runtime

    return f"{runtime()}, {KIND} graph"


def shipped_reader() -> StakesReader | None:
    """The shipped reader, or None where no reader weights are in the package (the generator
    then reads prompts with ``stakes.npz`` on the plain embedding)."""
    folder = default_reader_dir()
    if not (folder / "weights.safetensors").exists():
        return None
    return StakesReader(folder)


@dataclass(frozen=True, slots=True)
class PromptReading:
    """What the instruction step needs from a prompt: its embedding, P(any value at stake)
    and P(value at stake) per value id (in ``vilmo.values.VALUES`` order)."""

    vector: np.ndarray
    gate: float
    probabilities: np.ndarray


class StakesReader:
    """The combined int8 graph (embedding + reader logits) with an LRU cache per text."""

    def __init__(self, model_dir: str | Path | None = None, cache_size: int = 4096,
                 batch_size: int = 32, threads: int | None = 1) -> None:
        self.model_dir = Path(model_dir) if model_dir else default_reader_dir()
        self.config: dict[str, Any] = json.loads(
            (self.model_dir / "config.json").read_text("utf-8"))
        if list(self.config["outputs"]) != ["gate", *VALUES]:
            raise ValueError("the reader's outputs do not match the taxonomy's value ids")
        platt = self.config["gate"]["platt"]
        self._a, self._b = float(platt[0]), float(platt[1])
        self.batch_size = batch_size
        self.threads = threads
        self.cache = _LruCache(cache_size)
        self.shared: SharedCache | None = None
        self._loaded: tuple[Int8Session, Tokenizer] | None = None
        self._lock = threading.Lock()

    @property
    def threshold(self) -> float:
        """The gate's operating threshold, chosen on dev."""
        return float(self.config["gate"]["threshold"])

    def _sources(self) -> list[Path]:
        return [self.model_dir / "weights.safetensors",
                *sorted(packaged_model_path().glob("*.safetensors"))]

    def graph_path(self) -> Path:
        """Where the graph is cached (whether or not it is there yet)."""
        from vilmo.judge.value_onnx import graph_path

        return graph_path(KIND, self._sources())

    def warm_up(self) -> None:
        """Build or load the graph now (``vilmo warmup``, start-up), not on the first request."""
        self._run(["warm-up"])

    def use_cache(self, cache: SharedCache | None) -> None:
        """Keep readings in ``cache`` (shared, expiring) instead of the in-process LRU."""
        self.shared = cache

    def _load(self) -> tuple[Int8Session, Tokenizer]:
        with self._lock:
            if self._loaded is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from tokenizers import Tokenizer

                from vilmo.judge.value_onnx import int8_session

                path = packaged_model_path()
                tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
                tokenizer.no_padding()
                tokenizer.enable_truncation(MAX_TOKENS)
                session = int8_session(lambda: reader_network(self.model_dir), self._sources(),
                                       self.threads or 1, kind=KIND)
                self._loaded = (session, tokenizer)
            return self._loaded

    def _run(self, texts: Sequence[str]) -> Matrix:
        session, tokenizer = self._load()
        ids, mask = pad_numpy([e.ids for e in tokenizer.encode_batch(list(texts))])
        out: Matrix = session(ids, mask).astype(np.float32)
        return out

    def rows(self, texts: Sequence[str]) -> Matrix:
        """The graph's output per text: the embedding, then the gate and value logits."""
        width = DIMENSIONS + 1 + len(VALUES)
        found = {t: v for t in dict.fromkeys(texts) if (v := self._cached(t, width)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start:start + self.batch_size]
            for text, row in zip(batch, self._run(batch), strict=True):
                found[text] = row
                self._keep(text, row)
        return (np.stack([found[t] for t in texts]) if texts
                else np.zeros((0, width), dtype=np.float32))

    def encode(self, texts: Sequence[str]) -> Matrix:
        """Unit-length sentence embeddings (``TextEncoder``), one row per text."""
        out: Matrix = self.rows(texts)[:, :DIMENSIONS]
        return out

    def read(self, text: str) -> PromptReading:
        """The prompt's embedding, calibrated gate probability and value probabilities."""
        row = self.rows([text])[0]
        gate = float(sigmoid(np.float32(self._a * row[DIMENSIONS] + self._b)))
        probs = sigmoid(row[DIMENSIONS + 1:]).astype(np.float32)
        return PromptReading(row[:DIMENSIONS], gate, probs)

    def _cached(self, text: str, width: int) -> np.ndarray | None:
        shared = self.shared
        if shared is None:
            return self.cache.get(text)
        data = shared.get(SHARED_KEY_PREFIX + text)
        return None if data is None else load_vector(data, width)

    def _keep(self, text: str, row: np.ndarray) -> None:
        shared = self.shared
        if shared is None:
            self.cache.put(text, row)
        else:
            shared.put(SHARED_KEY_PREFIX + text, dump_vector(row))


def reader_network(model_dir: Path) -> torch.nn.Module:
    """The fp32 combined network to export: ``(ids, mask) -> [embedding | gate, values]``."""
    import copy

    import torch
    from safetensors.torch import load_file

    from vilmo.judge.value_net import ValueNet, _additive, _run, load_base, unpack

    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    bert, _ = load_base(packaged_model_path())
    reader = ValueNet(copy.deepcopy(bert), len(config["outputs"]), int(config["n_frozen"]))
    _, unexpected = reader.load_state_dict(
        unpack(load_file(str(model_dir / "weights.safetensors"))), strict=False)
    if unexpected:
        raise ValueError(f"unexpected reader weights: {unexpected}")
    reader.eval()
    n_frozen = reader.n_frozen

    class CombinedNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.reader_layers = torch.nn.ModuleList(reader.bert.encoder.layer[n_frozen:])
            self.head = reader.head

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            add = _additive(mask, hidden.dtype)
            for layer in self.bert.encoder.layer[:n_frozen]:
                hidden = _run(layer, hidden, add)
            plain, read = hidden, hidden
            for layer in self.bert.encoder.layer[n_frozen:]:
                plain = _run(layer, plain, add)
            for layer in self.reader_layers:
                read = _run(layer, read, add)
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            count = weights.sum(1).clamp(min=1e-9)
            embedding = torch.nn.functional.normalize((plain * weights).sum(1) / count, dim=-1)
            logits = self.head((read * weights).sum(1) / count)
            return torch.cat([embedding, logits], dim=1)

    return CombinedNet().eval()
