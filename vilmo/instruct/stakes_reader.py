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

Served split in two (``split_graph``, cut from the int8 graph by ``vilmo warmup`` or on first
load, without torch): the shared bottom with the reader's top (the gate and value logits, and
the bottom's hidden states), then the packaged top on those hidden states (the embedding). The
halves are the int8 graph's own nodes, so their outputs are the one graph's, bit for bit. So
``read`` runs the second half only when the embedding is asked for: a prompt with nothing at
stake (most everyday prompts) costs 6 of the 8 layers. The bottom's hidden states of a
one-prompt pass are handed on (``on_bottom``): the judge's pass over the same prompt starts
there (``vilmo.instruct.shared_bottom``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vilmo.judge.embedder import DIMENSIONS, MAX_TOKENS, CachedGraph, packaged_model_path
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
"""A text's row in a shared cache: all ``width`` floats, or the heads only (``HEADS`` floats:
read, the embedding never asked for)."""
HEADS = 1 + len(VALUES)
READ_KIND, EMBED_KIND = "stakes_reader_read", "stakes_reader_embed"
"""The cached halves of the graph (``split_graph``), under the same key as the whole."""
log = logging.getLogger(__name__)
READ_CHARS = 16 * MAX_TOKENS
"""The most characters of a text tokenized: the tokenizer keeps its first ``MAX_TOKENS`` tokens
but reads the whole text first (a 420 KB prompt, every time)."""


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


class PromptReading:
    """What the instruction step needs from a prompt: its embedding, P(any value at stake)
    and P(value at stake) per value id (in ``vilmo.values.VALUES`` order). The embedding (and
    probabilities derived from it) may be computed when first asked for: ``embed`` (and
    ``probabilities_of``) say how."""

    __slots__ = ("_embed", "_probabilities", "_probabilities_of", "_vector", "gate")

    def __init__(self, vector: np.ndarray | None, gate: float,
                 probabilities: np.ndarray | None, *,
                 embed: Callable[[], np.ndarray] | None = None,
                 probabilities_of: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        if (vector is None and embed is None) or (
                probabilities is None and probabilities_of is None):
            raise ValueError("a reading needs its embedding and probabilities, or how to get them")
        self.gate = gate
        self._vector, self._embed = vector, embed
        self._probabilities, self._probabilities_of = probabilities, probabilities_of

    @property
    def vector(self) -> np.ndarray:
        """The prompt's embedding (computed now if it was not yet)."""
        if self._vector is None:
            assert self._embed is not None
            self._vector, self._embed = self._embed(), None
        return self._vector

    @property
    def probabilities(self) -> np.ndarray:
        if self._probabilities is None:
            assert self._probabilities_of is not None
            self._probabilities = self._probabilities_of(self.vector)
        return self._probabilities

    @property
    def embedded(self) -> bool:
        """Whether the embedding has been computed (or was given)."""
        return self._vector is not None

    @property
    def blank(self) -> bool:
        """A blank prompt's reading: its embedding given as zeros."""
        return self._vector is not None and not self._vector.any()

    def rescored(self, probabilities_of: Callable[[np.ndarray], np.ndarray]) -> PromptReading:
        """The same reading with the value probabilities ``probabilities_of(embedding)``, the
        embedding still computed only when asked for (and once)."""
        if self._vector is not None:
            return PromptReading(self._vector, self.gate, None, probabilities_of=probabilities_of)
        return PromptReading(None, self.gate, None, embed=lambda: self.vector,
                             probabilities_of=probabilities_of)


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
        self._halves: tuple[Int8Session, Int8Session, Tokenizer] | None = None
        self._whole = False
        """True where the graph could not be split: every text runs the whole graph."""
        self.on_bottom: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None
        """Told ``(ids, mask, hidden states)`` of every one-prompt pass of the shared bottom
        (``vilmo.instruct.shared_bottom``: the judge's pass over the same prompt starts there)."""

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
        """The prompt's calibrated gate probability and value probabilities, and its embedding,
        computed when first asked for: the first half of the split graph now, the second
        (the plain top layers) only then."""
        row = self._cached_any(text)
        if row is not None and len(row) == self.width:
            return self._reading(row[DIMENSIONS:], row[:DIMENSIONS])
        if row is not None:  # the heads were read before, the embedding never asked for
            return self._reading(row, None, lambda: self._embed_whole(text))
        halves = self._split()
        if halves is None:
            row = self.rows([text])[0]
            return self._reading(row[DIMENSIONS:], row[:DIMENSIONS])
        heads, hidden, mask = self._read_half(halves, [text])
        self._keep(text, heads[0])
        return self._reading(heads[0], None,
                             lambda: self._embed_rest(text, heads[0], hidden, mask))

    def _reading(self, heads: np.ndarray, vector: np.ndarray | None,
                 embed: Callable[[], np.ndarray] | None = None) -> PromptReading:
        gate = float(sigmoid(np.float32(self._a * heads[0] + self._b)))
        probs = sigmoid(heads[1:]).astype(np.float32)
        return PromptReading(vector, gate, probs, embed=embed)

    def _embed_whole(self, text: str) -> np.ndarray:
        """The embedding of a text whose heads alone are cached: its whole row computed and
        kept (not looked up again: the cache holds only the heads)."""
        row = self._run([text])[0]
        self._keep(text, row)
        vector: np.ndarray = row[:DIMENSIONS]
        return vector

    def _embed_rest(self, text: str, heads: np.ndarray, hidden: np.ndarray,
                    mask: np.ndarray) -> np.ndarray:
        halves = self._split()
        assert halves is not None
        vector: np.ndarray = halves[1](hidden, mask)[0].astype(np.float32)
        self._keep(text, np.concatenate([vector, heads]))
        return vector

    def _cached_any(self, text: str) -> np.ndarray | None:
        """The text's cached row: whole, or the heads only."""
        shared = self.shared
        if shared is None:
            return self.cache.get(text)
        data = shared.get(self.shared_key(text))
        if data is None or len(data) not in (4 * self.width, 4 * HEADS):
            return None
        return np.frombuffer(data, dtype="<f4").astype(np.float32)

    def _run(self, texts: Sequence[str]) -> Matrix:
        """Whole rows: both halves over the same batch (the one graph's rows, bit for bit)."""
        halves = self._split()
        if halves is None:
            return super()._run(texts)
        heads, hidden, mask = self._read_half(halves, texts)
        out: Matrix = np.concatenate([halves[1](hidden, mask).astype(np.float32), heads], axis=1)
        return out

    def _read_half(self, halves: tuple[Int8Session, Int8Session, Tokenizer],
                   texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The heads' logits, and the shared bottom's hidden states and mask for the rest."""
        read, _, tokenizer = halves
        # One prompt (the step's case): ``encode``, the same ids without waking the
        # tokenizer's thread pool, which costs more than tokenising a short prompt.
        encodings = ([tokenizer.encode(texts[0][:READ_CHARS])] if len(texts) == 1
                     else tokenizer.encode_batch([text[:READ_CHARS] for text in texts]))
        ids, mask = pad_numpy([e.ids for e in encodings])
        heads, hidden = read.outputs(ids, mask)
        if self.on_bottom is not None and len(texts) == 1:
            self.on_bottom(ids, mask, hidden)
        return heads.astype(np.float32), hidden, mask

    def bottom(self, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """One prompt's token row, mask and the shared bottom's hidden states, computed now
        (uncached); None where the graph is served whole."""
        halves = self._split()
        if halves is None:
            return None
        encoding = halves[2].encode(text[:READ_CHARS])
        ids, mask = pad_numpy([encoding.ids])
        return ids, mask, halves[0].outputs(ids, mask)[1]

    def _split(self) -> tuple[Int8Session, Int8Session, Tokenizer] | None:
        """The two halves' sessions (cut from the whole graph if not cached yet), or None
        where the graph cannot be cut (then the whole graph serves)."""
        if self._halves is not None or self._whole:
            return self._halves
        with self._lock:
            if self._halves is None and not self._whole:
                from vilmo.judge.graph_files import cached_file
                from vilmo.judge.value_onnx import cached_graph, graph_path, shared_session

                sources = self._sources()
                read_path, embed_path = graph_path(READ_KIND, sources), graph_path(
                    EMBED_KIND, sources)
                read_found, embed_found = cached_file(read_path), cached_file(embed_path)
                if read_found is not None and embed_found is not None:
                    read_path, embed_path = read_found, embed_found
                else:
                    whole = cached_graph(self._network, sources, kind=KIND)
                    try:
                        read_path, embed_path = split_graph(
                            whole, int(self.config["n_frozen"]), read_path, embed_path)
                    except Exception as exc:  # noqa: BLE001 - any graph it cannot cut
                        log.warning("serving the request reader's graph whole: %s", exc)
                        self._whole = True
                        return None
                threads = self.threads or 1
                self._halves = (shared_session(read_path, threads),
                                shared_session(embed_path, threads), self._load_tokenizer())
            return self._halves


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


def split_graph(whole: Path, n_frozen: int, read_path: Path, embed_path: Path
                ) -> tuple[Path, Path]:
    """Cut the int8 graph (``reader_network``'s export) in two at the shared bottom's output:
    ``(ids, mask) -> (heads' logits, hidden states)`` and ``(hidden states, mask) ->
    embedding``, each file written whole (a temporary name, then renamed; a temp dir where the
    cache is read-only). Raises ValueError where the graph is not laid out as expected."""
    import onnx
    from onnx.utils import Extractor

    from vilmo.judge.graph_files import write_cached

    model = onnx.load(str(whole))
    graph = model.graph
    made = {out: node for node in graph.node for out in node.output}
    boundary = ("/embeddings/LayerNorm/LayerNormalization_output_0" if n_frozen == 0 else
                f"/layer.{n_frozen - 1}/output/LayerNorm/LayerNormalization_output_0")
    last = made.get(graph.output[0].name) if len(graph.output) == 1 else None
    if boundary not in made or last is None or last.op_type != "Concat" or len(last.input) != 2:
        raise ValueError(f"{whole.name} has no shared bottom output {boundary!r} or no "
                         "[embedding | heads] output")
    embedding, heads = last.input
    extractor = Extractor(model)
    halves = ((read_path, ["ids", "mask"], [heads, boundary]),
              (embed_path, [boundary, "mask"], [embedding]))
    done: list[Path] = []
    for target, inputs, outputs in halves:
        part = extractor.extract_model(inputs, outputs)
        done.append(write_cached(target, functools.partial(_save, part)))
    return done[0], done[1]


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))
