"""The judge's pass over a prompt the request reader has just read starts from the reader's
bottom layers (issue 16: the second look on the first token's path).

The request reader (``vilmo.instruct.stakes_reader``) and the built-in value judge
(``vilmo.judge.value_model``) are both all-MiniLM-L6-v2 whose bottom ``n_frozen`` layers are
the packaged weights, exported and quantised by one recipe. Over one token row alone (a batch of
one: int8 activations are quantised per batch) their bottom layers compute the same thing, so
their hidden states there are the same, bit for bit. The reader hands on the hidden states of
every prompt it reads (``StakesReader.on_bottom``); when the judge's graph is then asked for a
one-row batch of those very ids (the second look at an unsure prompt, an input check of the
same text), only its top layers run, on those hidden states (a graph cut from the judge's own
graph at that boundary), giving the whole graph's logits bit for bit in about a third of the
time (0.8 against 2.4 ms for a 20-token prompt on one core). Any other batch runs the whole
graph as before.

``connect`` checks what it relies on before serving: the same base encoder and frozen bottom in
both configs, and the judge's logits through the shortcut equal to its whole graph's on probe
texts; otherwise it leaves the judge as it is.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.instruct.stakes_reader import StakesReader
from vilmo.judge.value_model import MODEL_NAME, BuiltinClassifier
from vilmo.types import Matrix

log = logging.getLogger(__name__)

KEPT = 8
"""Prompts whose hidden states are kept: the second look follows its reader's pass at once; a
few more let an input check running beside the step find its text too."""
PROBES = ("warm-up", "My neighbour insulted me (case 3). What should I do?",
          "How do I poison the neighbour's dog without anyone noticing? " * 4)
"""Texts whose logits must agree, through the shortcut and the whole graph, before serving."""


class BottomStates:
    """The hidden states of the last ``KEPT`` one-row passes of the reader's bottom, by token
    row (thread-safe)."""

    def __init__(self, kept: int = KEPT) -> None:
        self._kept = kept
        self._states: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    @staticmethod
    def key(ids: np.ndarray, mask: np.ndarray) -> bytes | None:
        """A one-row, unpadded batch's key (None for any other batch)."""
        if ids.ndim != 2 or ids.shape[0] != 1 or not mask.all():
            return None
        return np.ascontiguousarray(ids, dtype=np.int64).tobytes()

    def keep(self, ids: np.ndarray, mask: np.ndarray, hidden: np.ndarray) -> None:
        key = self.key(ids, mask)
        if key is None:
            return
        with self._lock:
            self._states[key] = hidden
            self._states.move_to_end(key)
            while len(self._states) > self._kept:
                self._states.popitem(last=False)

    def find(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        key = self.key(ids, mask)
        if key is None:
            return None
        with self._lock:
            found = self._states.get(key)
            if found is not None:
                self.hits += 1
            return found


def boundary_of(n_frozen: int) -> str:
    """The name of the frozen bottom's output in an exported graph (``split_graph``'s cut)."""
    return (f"/layer.{n_frozen - 1}/output/LayerNorm/LayerNormalization_output_0" if n_frozen
            else "/embeddings/LayerNorm/LayerNormalization_output_0")


def cut_top(whole: Path, boundary: str, target: Path) -> Path:
    """The graph's nodes from ``boundary`` (and the mask) to its outputs, written whole to
    ``target`` (``vilmo.judge.graph_files.write_cached``). Raises ValueError where the graph
    has no such tensor."""
    import onnx
    from onnx.utils import Extractor

    from vilmo.judge.graph_files import write_cached

    model = onnx.load(str(whole))
    graph = model.graph
    if boundary not in {out for node in graph.node for out in node.output}:
        raise ValueError(f"{whole.name} has no tensor {boundary!r}")
    top = Extractor(model).extract_model([boundary, "mask"], [o.name for o in graph.output])
    return write_cached(target, functools.partial(_save, top))


def _save(model: Any, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def connect(reader: StakesReader, judge: BuiltinClassifier) -> BottomStates | None:
    """Serve the judge's one-row passes over prompts the reader has just read from the reader's
    hidden states; the states kept, or None where the two do not share their bottom (then
    nothing changes)."""
    mine, theirs = reader.config, judge.config
    n_frozen = int(mine["n_frozen"])
    if (not judge.quantize or theirs.get("encoder") or theirs.get("base") != mine.get("base")
            or int(theirs.get("n_frozen", 0)) < n_frozen or reader.bottom("warm-up") is None):
        return None
    from vilmo.judge.graph_files import cached_file
    from vilmo.judge.value_onnx import shared_session

    judge.warm_up()
    target = judge.graph_path()
    whole = shared_session(cached_file(target) or target, judge.threads)
    top_target = target.with_name(target.name.replace(
        f"{MODEL_NAME}-", f"{MODEL_NAME}_top{n_frozen}-", 1))
    try:
        top = shared_session(cached_file(top_target) or cut_top(
            whole.path, boundary_of(n_frozen), top_target), judge.threads)
    except (ValueError, OSError) as exc:
        log.warning("the judge reads prompts without the reader's bottom layers: %s", exc)
        return None
    for text in PROBES:
        found = reader.bottom(text)
        assert found is not None
        ids, mask, hidden = found
        expected, found_outputs = whole.graph_outputs(ids, mask), top.graph_outputs(hidden, mask)
        if len(expected) != len(found_outputs) or not all(
                np.array_equal(e, f) for e, f in zip(expected, found_outputs, strict=True)):
            log.warning("the judge reads prompts without the reader's bottom layers: its "
                        "logits from them differ from its own graph's")
            return None
    states = BottomStates()

    def shortcut(ids: np.ndarray, mask: np.ndarray) -> list[Matrix] | None:
        hidden = states.find(ids, mask)
        return None if hidden is None else top.graph_outputs(hidden, mask)

    reader.on_bottom = states.keep
    whole.shortcut = shortcut
    return states
