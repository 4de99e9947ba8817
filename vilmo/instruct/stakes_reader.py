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
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vilmo.judge.embedder import DIMENSIONS, CachedGraph, packaged_model_path
from vilmo.numeric import sigmoid
from vilmo.types import Matrix
from vilmo.values import VALUES

if TYPE_CHECKING:
    import torch

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


class StakesReader(CachedGraph):
    """The combined int8 graph (embedding + reader logits), its rows cached per text."""

    width = DIMENSIONS + 1 + len(VALUES)
    kind = KIND
    shared_prefix = SHARED_KEY_PREFIX

    def __init__(self, model_dir: str | Path | None = None, cache_size: int = 4096,
                 batch_size: int = 32, threads: int | None = 1) -> None:
        super().__init__(cache_size, batch_size, threads)
        self.model_dir = Path(model_dir) if model_dir else default_reader_dir()
        self.config: dict[str, Any] = json.loads(
            (self.model_dir / "config.json").read_text("utf-8"))
        if list(self.config["outputs"]) != ["gate", *VALUES]:
            raise ValueError("the reader's outputs do not match the taxonomy's value ids")
        platt = self.config["gate"]["platt"]
        self._a, self._b = float(platt[0]), float(platt[1])

    @property
    def threshold(self) -> float:
        """The gate's operating threshold, chosen on dev."""
        return float(self.config["gate"]["threshold"])

    def _sources(self) -> list[Path]:
        return [self.model_dir / "weights.safetensors",
                *sorted(packaged_model_path().glob("*.safetensors"))]

    def _network(self) -> torch.nn.Module:
        return reader_network(self.model_dir)

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
