"""The ONNX graphs a gateway serves with, for ``vilmo warmup`` (which builds them) and for
``vilmo serve`` (which checks for them where torch, which builds them, is missing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Graph = tuple[str, Callable[[], Path], Callable[[], None]]
"""(what it is, where its graph is cached, how to build or load it)."""


def serving_graphs() -> list[Graph]:
    """Every graph the gateway loads: the value judge, the fp32 encoder (the zero-shot judge of
    a policy's own principles), and for instructions the request reader (embedding and values
    at stake in one pass) where its weights are shipped, else the int8 prompt encoder."""
    from vilmo.instruct.stakes_reader import shipped_reader
    from vilmo.judge.embedder import OnnxEmbedder
    from vilmo.judge.value_model import BuiltinClassifier

    judge = BuiltinClassifier(cache_size=0)
    zero_shot = OnnxEmbedder(cache_size=0, quantized=False)
    reader = shipped_reader() or OnnxEmbedder(cache_size=0)
    name = "prompt encoder (int8)" if isinstance(reader, OnnxEmbedder) else "request reader (int8)"
    instructions: Graph = (name, reader.graph_path, reader.warm_up)
    return [("value judge (int8)", judge.graph_path, judge.warm_up), instructions,
            ("zero-shot encoder (fp32)", zero_shot.graph_path, zero_shot.warm_up)]


def missing_graphs() -> list[Path]:
    """The serving graphs not in the cache yet (nor in the private folder ``write_cached``
    uses where the cache cannot be written)."""
    from vilmo.judge.graph_files import cached_file

    return [path for _, where, _ in serving_graphs() if cached_file(path := where()) is None]
