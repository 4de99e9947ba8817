"""Networks as int8 ONNX Runtime sessions, built once and cached on disk: the classifier
network, and the plain sentence encoder the instruction step embeds prompts with
(``vilmo.judge.embedder.Int8Embedder``).

On CPUs without AVX-512 VNNI, PyTorch's dynamic int8 is barely faster than fp32; ONNX Runtime's
int8 kernels (per-channel weight scales) are faster there and stay closer to the fp32 logits.
Weights use 7 bits (``reduce_range``): the AVX2 u8×s8 kernels add pairs of products in 16 bits
and saturate with full-range weights, so results would differ between CPUs.
The packaged encoder is never committed, so the int8 graph is made on first load: the fp32
network (packaged encoder + committed layers) is exported, quantised, and cached under a key of
everything it was built from.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vilmo.types import Matrix

if TYPE_CHECKING:
    from torch import nn

EXPORT_VERSION = 2
"""Bump when the export or quantisation recipe changes, so cached graphs are rebuilt."""
RECIPE = "int8, per-channel 7-bit weights, activations quantised per batch"


def runtime() -> str:
    """What the shipped path runs on, for records of what a calibration was fitted through."""
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}, {RECIPE} (export {EXPORT_VERSION})"


def cache_dir() -> Path:
    """``$VILMO_CACHE_DIR``, else ``$XDG_CACHE_HOME/vilmo``, else ``~/.cache/vilmo``."""
    if os.environ.get("VILMO_CACHE_DIR"):
        return Path(os.environ["VILMO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vilmo"


class Int8Session:
    """``(ids, mask) -> outputs`` (logits or embeddings) through ONNX Runtime; safe to call from several threads."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.path = path
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> Matrix:
        out: Matrix = self._session.run(None, {"ids": ids, "mask": mask})[0]
        return out


def build_key(*sources: Path) -> str:
    """A digest of the files the graph is made from and of the tools that make it."""
    import onnxruntime
    import torch

    digest = hashlib.sha256(f"{EXPORT_VERSION}|{onnxruntime.__version__}|{torch.__version__}"
                            .encode())
    for source in sources:
        with source.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def int8_session(net: nn.Module, sources: Sequence[Path], threads: int | None = None,
                 kind: str = "value_classifier") -> Int8Session:
    """The cached int8 graph of ``net`` (fp32, eval mode, ``(ids, mask) -> one tensor``), whose
    weights come from the files ``sources``; exported and quantised if missing. ``kind`` names
    the cached file, so different networks built from the same files never share one.

    The file is written under a temporary name and renamed, so concurrent processes never read
    a half-written graph; where the cache is not writable, the graph lives in a temp dir.
    """
    target = cache_dir() / "onnx" / f"{kind}-{build_key(*sources)}.int8.onnx"
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _export_int8(net, target)
        except OSError:
            target = Path(tempfile.mkdtemp(prefix="vilmo-onnx-")) / target.name
            _export_int8(net, target)
    return Int8Session(target, threads)


def _export_int8(net: nn.Module, target: Path) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="vilmo-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        ids = torch.full((2, 16), 1000, dtype=torch.long)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (ids, torch.ones_like(ids)), str(fp32), input_names=["ids", "mask"],
                output_names=["logits"], opset_version=17, dynamo=False,
                dynamic_axes={"ids": {0: "batch", 1: "tokens"},
                              "mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}})
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        quiet = _DropPreprocessingHint()
        logging.getLogger().addFilter(quiet)
        try:
            quantize_dynamic(fp32, partial, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True)
        finally:
            logging.getLogger().removeFilter(quiet)
        os.replace(partial, target)


class _DropPreprocessingHint(logging.Filter):
    """The quantiser advises shape pre-processing on every call; dynamic int8 does not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()
