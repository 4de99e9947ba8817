"""Networks as int8 ONNX Runtime sessions, built once and cached on disk: the classifier
network, and the plain sentence encoder the instruction step embeds prompts with
(``vilmo.judge.embedder.Int8Embedder``).

On CPUs without AVX-512 VNNI, PyTorch's dynamic int8 is barely faster than fp32; ONNX Runtime's
int8 kernels (per-channel weight scales) are faster there and stay closer to the fp32 logits.
Weights use 7 bits (``reduce_range``): the AVX2 u8×s8 kernels add pairs of products in 16 bits
and saturate with full-range weights, so results would differ between CPUs.
The packaged encoder is never committed, so the int8 graph is made once (``vilmo warmup``, or
on first load): the fp32 network (packaged encoder + committed layers) is exported with torch,
fused for CPU (each layer's attention one ``Attention`` op, its GELU one op: ``fuse_for_cpu``),
quantised, and cached under a key of everything it was built from. Reading a cached graph needs
only onnxruntime, so a gateway with a warm cache never imports torch. The zero-shot judge's
fp32 encoder is cached the same way, unquantised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vilmo.errors import VilmoError
from vilmo.judge.pooling import batch_cost
from vilmo.types import Matrix

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.fusion_options import FusionOptions
    from torch import nn

EXPORT_VERSION = 4
"""Bump when the export or quantisation recipe changes, so cached graphs are rebuilt. (3: the
key no longer holds torch's version, so a serving process finds the graph without torch. 4:
int8 graphs fused for CPU, ``fuse_for_cpu``.)"""
RECIPE = ("int8, per-channel 7-bit weights, activations quantised per batch, attention and "
          "GELU fused")
SESSION_FUSIONS_OFF = ["SkipLayerNormFusion", "BiasGeluFusion"]
"""ONNX Runtime's own load-time fusions that make the graphs slower here: its CPU
``SkipLayerNormalization`` took about 6 times as long as the ``Add`` and ``LayerNormalization`` it
replaces (onnxruntime 1.32, one thread), and ``BiasGelu`` longer than a ``Gelu`` whose bias the
int8 matrix product before it adds."""
SERVING_THREADS = 1
"""ONNX Runtime threads per session call in the gateway: requests run in parallel, and a
second pool thread mostly spin-waits (it doubled CPU per check and cut throughput)."""


def serving_cores() -> int:
    """The cores this process may use, at most 4: how many batches (or batches of one check)
    the gateway runs side by side, one ONNX thread each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


Batch = tuple[np.ndarray, np.ndarray]
_SIDE_POOL: ThreadPoolExecutor | None = None
_SIDE_POOL_LOCK = threading.Lock()


def run_batches(net: Callable[[np.ndarray, np.ndarray], Matrix],
                batches: Sequence[Batch]) -> list[Matrix]:
    """Each padded batch's output, the batches run side by side on idle cores: the calling
    thread and up to ``serving_cores() - 1`` pool threads each take the next batch not yet
    taken (the costliest first, ``vilmo.judge.pooling.batch_cost``) until none is left. So a
    lone check's batches (cut to be shared out, ``vilmo.judge.pooling.balanced_batches``)
    keep every idle core busy, and a large check's many batches are shared out over the
    cores. A pool thread joins (and takes another batch) only while fewer threads than cores
    run checks' batches: when the micro-batcher already runs one check
    per core, a helper would only oversubscribe them. Every batch is computed exactly as it
    would be alone, so the scores do not change. A network that runs several threads per call
    itself (offline jobs with ``threads`` = cores) runs its batches one after the other."""
    _RUNNING.enter()
    try:
        if len(batches) <= 1 or serving_cores() <= 1 or getattr(net, "threads", 1) > 1:
            return [net(ids, mask) for ids, mask in batches]
        return _side_by_side(net, batches)
    finally:
        _RUNNING.leave()


def _side_by_side(net: Callable[[np.ndarray, np.ndarray], Matrix],
                  batches: Sequence[Batch]) -> list[Matrix]:
    global _SIDE_POOL
    cores = serving_cores()
    with _SIDE_POOL_LOCK:
        if _SIDE_POOL is None:
            _SIDE_POOL = ThreadPoolExecutor(max_workers=cores - 1,
                                            thread_name_prefix="vilmo-onnx-side")
        pool = _SIDE_POOL
    out: list[Matrix | None] = [None] * len(batches)
    order = sorted(range(len(batches)), key=lambda i: -batch_cost(*batches[i][0].shape))
    taken = _Counter(len(order))

    def run(at: int) -> None:
        try:
            out[order[at]] = net(*batches[order[at]])
        except BaseException:
            taken.stop()
            raise

    def help_out() -> None:
        if not _RUNNING.enter(limit=cores):
            return
        try:
            while not _RUNNING.over(cores) and (at := taken.next()) is not None:
                run(at)
        finally:
            _RUNNING.leave()

    helpers = [pool.submit(help_out) for _ in range(min(len(batches), cores) - 1)]
    try:
        while (at := taken.next()) is not None:
            run(at)
    finally:
        for helper in helpers:
            # A helper that has not started (its pool thread busy with another check's batch)
            # is not waited for: the caller has taken its share.
            if not helper.cancel():
                helper.result()
    done = [o for o in out if o is not None]
    assert len(done) == len(batches)
    return done


class _Counter:
    """The next unclaimed position below ``end``, for several threads; ``stop`` ends it."""

    def __init__(self, end: int) -> None:
        self._next, self._end = 0, end
        self._lock = threading.Lock()

    def next(self) -> int | None:
        with self._lock:
            if self._next >= self._end:
                return None
            self._next += 1
            return self._next - 1

    def stop(self) -> None:
        with self._lock:
            self._next = self._end


class _Running:
    """How many threads run checks' batches now (callers of ``run_batches`` and helpers)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()

    def enter(self, limit: int | None = None) -> bool:
        """Count one more, unless ``limit`` threads already run (then False)."""
        with self._lock:
            if limit is not None and self._count >= limit:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count -= 1

    def over(self, limit: int) -> bool:
        with self._lock:
            return self._count > limit

    def now(self) -> int:
        with self._lock:
            return self._count


_RUNNING = _Running()


def idle_cores() -> int:
    """The serving cores no check's batches run on now (at least one): what a new check's
    batches may be shared over (``vilmo.judge.pooling.balanced_batches``); under load each
    check keeps its batches whole, since cutting them would only add calls."""
    return max(1, serving_cores() - _RUNNING.now())


class GraphMissing(VilmoError, RuntimeError):
    """A graph is not in the cache and this install cannot build it (no torch)."""


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


def session_options(threads: int = SERVING_THREADS) -> ort.SessionOptions:
    """``threads`` intra-op threads, one inter-op thread, and no spin-waiting: an idle pool
    thread sleeps instead of burning a core between calls."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


class Int8Session:
    """``(ids, mask) -> outputs`` (logits or embeddings) through ONNX Runtime; safe to call from
    several threads. Made through ``shared_session``: one per graph per process."""

    def __init__(self, path: Path, threads: int = SERVING_THREADS,
                 fusions_off: Sequence[str] = SESSION_FUSIONS_OFF) -> None:
        """``fusions_off``: ONNX Runtime load-time fusions not applied (the benchmark's
        baseline passes none, as export 3 was served)."""
        import onnxruntime as ort

        self.path = path
        self.threads = threads
        self._session = ort.InferenceSession(str(path), session_options(threads),
                                             providers=["CPUExecutionProvider"],
                                             disabled_optimizers=list(fusions_off))
        self._inputs = [i.name for i in self._session.get_inputs()]
        """``ids`` (or a part graph's hidden states) and ``mask``, by position."""

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> Matrix:
        return self.outputs(ids, mask)[0]

    def outputs(self, ids: np.ndarray, mask: np.ndarray) -> list[Matrix]:
        """Every output of the graph, in order."""
        out: list[Matrix] = self._session.run(None, dict(zip(self._inputs, (ids, mask),
                                                             strict=True)))
        return out


_SESSIONS: dict[tuple[Path, int], Int8Session] = {}
_SESSIONS_LOCK = threading.Lock()


def shared_session(path: Path, threads: int = SERVING_THREADS) -> Int8Session:
    """The process's one session of this graph (per thread count): every classifier and
    encoder that loads it shares the weights and the thread pool."""
    with _SESSIONS_LOCK:
        found = _SESSIONS.get((path, threads))
        if found is None:
            found = _SESSIONS[(path, threads)] = Int8Session(path, threads)
        return found


def build_key(*sources: Path) -> str:
    """A digest of the files the graph is made from and of the runtime that reads it (not of
    torch: a serving process without torch must find the graph ``vilmo warmup`` made)."""
    import onnxruntime

    digest = hashlib.sha256(f"{EXPORT_VERSION}|{onnxruntime.__version__}".encode())
    for source in sources:
        with source.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def graph_path(kind: str, sources: Sequence[Path], quantized: bool = True) -> Path:
    """Where the cached graph of ``kind`` made from ``sources`` lives."""
    suffix = "int8" if quantized else "fp32"
    return cache_dir() / "onnx" / f"{kind}-{build_key(*sources)}.{suffix}.onnx"


def int8_session(build: Callable[[], nn.Module], sources: Sequence[Path],
                 threads: int = SERVING_THREADS, kind: str = "value_classifier",
                 quantized: bool = True) -> Int8Session:
    """The cached graph (int8, or fp32 when not ``quantized``) of the network ``build()`` makes
    (fp32, eval mode, ``(ids, mask) -> one tensor``), whose weights come from the files
    ``sources``; exported (torch needed) only if missing. ``kind`` names the cached file, so
    different networks built from the same files never share one.

    The file is written under a temporary name and renamed, so concurrent processes never read
    a half-written graph; where the cache is not writable, the graph lives in a temp dir.
    """
    return shared_session(cached_graph(build, sources, kind, quantized), threads)


def cached_graph(build: Callable[[], nn.Module], sources: Sequence[Path],
                 kind: str = "value_classifier", quantized: bool = True) -> Path:
    """The cached graph's file (``int8_session``), exported first if missing; not loaded."""
    target = graph_path(kind, sources, quantized)
    if not target.exists():
        net = _buildable(build, target)
        target = write_cached(target, lambda partial: _export_int8(net, partial, quantized))
    return target


def write_cached(target: Path, write: Callable[[Path], None]) -> Path:
    """Where ``write(path)`` put the file: ``target``, written whole (under a temporary name,
    then renamed, so a concurrent process never reads half a graph), or, where the cache
    folder is not writable, the same name in this user's private temporary folder (reused:
    the name carries the build key, so every start does not write another copy)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_whole(target, write)
        return target
    except OSError:
        pass
    fallback = _private_temp_dir() / target.name
    if not fallback.exists():
        _write_whole(fallback, write)
    return fallback


def _private_temp_dir() -> Path:
    """``$TMPDIR/vilmo-onnx-<uid>``, owned by this user and closed to others (a graph is code
    the process runs); a new folder each time if that one is not safe to use."""
    folder = Path(tempfile.gettempdir()) / f"vilmo-onnx-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="vilmo-onnx-"))


def _write_whole(target: Path, write: Callable[[Path], None]) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    write(partial)
    os.replace(partial, target)


def _buildable(build: Callable[[], nn.Module], target: Path) -> nn.Module:
    try:
        import torch  # noqa: F401 - only to tell a missing torch from a failing build
    except ImportError as exc:
        raise GraphMissing(
            f"the ONNX graph {target.name} is not in the cache ({target.parent}) and torch, "
            "which builds it, is not installed: run `vilmo warmup` with torch installed and "
            "the same VILMO_CACHE_DIR") from exc
    return build()


def _export_int8(net: nn.Module, target: Path, quantized: bool = True,
                 fused: bool | None = None) -> None:
    """Export ``net`` to ``target``, quantised if ``quantized``; fused for CPU
    (``fuse_for_cpu``) if ``fused`` (default: int8 graphs only, since ONNX Runtime's fp32
    ``Attention`` was slower than the unfused fp32 graph). ``fused=False`` with ``quantized``
    is the recipe of export 3 (the benchmark's baseline)."""
    fused = quantized if fused is None else fused
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="vilmo-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        ids = torch.full((2, 16), 1000, dtype=torch.long)
        restore = _eager_attention(net) if fused else []
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (ids, torch.ones_like(ids)), str(fp32), input_names=["ids", "mask"],
                    output_names=["logits"], opset_version=17, dynamo=False,
                    dynamic_axes={"ids": {0: "batch", 1: "tokens"},
                                  "mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}})
        finally:
            for config, implementation in restore:
                setattr(config, "_attn_implementation", implementation)  # noqa: B010
        if fused:
            config = restore[0][0] if restore else None
            fuse_for_cpu(fp32, fp32, int(getattr(config, "num_attention_heads", 0)),
                         int(getattr(config, "hidden_size", 0)))
        if not quantized:
            shutil.copyfile(fp32, target)
            return
        quiet = _DropPreprocessingHint()
        logging.getLogger().addFilter(quiet)
        try:
            import onnx

            quantize_dynamic(fp32, target, weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True,
                             op_types_to_quantize=QUANTIZED_OPS if fused else None,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            logging.getLogger().removeFilter(quiet)


def _eager_attention(net: nn.Module) -> list[tuple[object, str]]:
    """Switch every attention block of ``net`` to transformers' eager attention (for the
    export only; the configs' old settings are returned to be restored): its graph is the
    pattern ONNX Runtime's BERT fusion recognises, SDPA's (a scale on each of Q and K) is not.
    Same arithmetic up to fp32 rounding."""
    restore: list[tuple[object, str]] = []
    seen: set[int] = set()
    for module in net.modules():
        config = getattr(module, "config", None)
        implementation = getattr(config, "_attn_implementation", None)
        if config is None or implementation is None or id(config) in seen:
            continue
        seen.add(id(config))
        restore.append((config, implementation))
        setattr(config, "_attn_implementation", "eager")  # noqa: B010
    return restore


def fuse_for_cpu(source: Path, target: Path, num_heads: int = 0,
                 hidden_size: int = 0) -> dict[str, int]:
    """Rewrite the fp32 MiniLM graph ``source`` with ONNX Runtime's fused CPU operators (each
    layer's attention one ``Attention``, its GELU one ``Gelu``; ``_fusion_options``) into
    ``target``; the fused ops' counts are returned. Unfused, the fp32 glue between the int8
    matrix products (attention's reshapes, transposes, masking and softmax; GELU's erf) was
    about two thirds of a call. The embeddings stay unfused (``EmbedLayerNormalization`` would
    swallow the mask into its own output, and the reader's halves are cut after them); the
    mask stays the raw 0/1 mask (any padding, as before). ``num_heads`` and ``hidden_size``:
    the encoder's (0: read from the graph). Raises
    ValueError where no attention block was fused (an export whose pattern the fusion does
    not know)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(str(source))
    _drop_noop_casts(model)
    _scale_as_division(model)
    _one_input_per_layer(model)
    options = _fusion_options(FusionOptions("bert"))
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        optimized = optimize_model(model, model_type="bert", num_heads=num_heads,
                                   hidden_size=hidden_size,
                                   optimization_options=options, opt_level=0)
    finally:
        quiet.setLevel(level)
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not fused.get("Attention"):
        raise ValueError(f"no attention block was fused in {source.name}: {fused}")
    optimized.save_model_to_file(str(target))
    return fused


def _fusion_options(options: FusionOptions) -> FusionOptions:
    """Attention and GELU fused; layer norms, residual adds and the embeddings left as they
    are (``SESSION_FUSIONS_OFF`` says why for the first two)."""
    options.enable_embed_layer_norm = False
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False
    options.use_raw_attention_mask(True)
    return options


QUANTIZED_OPS = ["MatMul", "Gemm", "Gather", "Attention"]
"""What the fused recipe quantises: as before (the linear layers, the head, the embedding
tables), with the fused attention blocks' Q/K/V projections as ``QAttention``."""


def _drop_noop_casts(model: onnx.ModelProto) -> None:
    """Remove ``Cast`` nodes to the type their input already has (the exporter writes one
    after the additive attention mask, ``_additive``'s ``.to(dtype)``); it hides the mask
    pattern from the attention fusion."""
    from onnx import helper, shape_inference

    typed = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*typed.graph.value_info, *typed.graph.input, *typed.graph.output)}
    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "Cast"]:
        target = helper.get_attribute_value(node.attribute[0])
        if types.get(node.input[0]) != target or node.output[0] in {o.name for o in graph.output}:
            continue
        for other in graph.node:
            for at, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[at] = node.input[0]
        graph.node.remove(node)


def _one_input_per_layer(model: onnx.ModelProto) -> None:
    """Where one layer norm's output feeds several layers' attention blocks (the reader's two
    tops both read the shared bottom's output), every layer after the first reads its own copy
    of that layer norm (the same values; one more layer norm a call): the fusion matches a
    block only where its input feeds exactly that block's Q, K and V (an ``Identity`` between
    would be dropped before fusing). Layers are told apart by the exporter's node names
    (``/layer.4/attention/...``, ``/reader_layers.0/attention/...``)."""
    import onnx

    graph = model.graph
    made = {name: node for node in graph.node for name in node.output}
    readers: dict[str, dict[str, list[onnx.NodeProto]]] = {}
    for node in graph.node:
        if "/attention/" in node.name:
            layer = node.name.split("/attention/")[0]
            for name in node.input:
                readers.setdefault(name, {}).setdefault(layer, []).append(node)
    copies: dict[str, list[onnx.NodeProto]] = {}
    for tensor, layers in readers.items():
        norm = made.get(tensor)
        if norm is None or norm.op_type != "LayerNormalization" or len(norm.output) != 1:
            continue
        for layer, nodes in list(layers.items())[1:]:
            copy = onnx.NodeProto()
            copy.CopyFrom(norm)
            copy.name = f"{norm.name}{layer.replace('/', '_')}"
            copy.output[0] = f"{tensor}{layer.replace('/', '_')}"
            copies.setdefault(tensor, []).append(copy)
            for node in nodes:
                for at, name in enumerate(node.input):
                    if name == tensor:
                        node.input[at] = copy.output[0]
    if not copies:
        return
    ordered: list[onnx.NodeProto] = []
    for node in graph.node:  # each copy right after its original: still in topological order
        ordered.append(onnx.NodeProto())
        ordered[-1].CopyFrom(node)
        ordered.extend(copies.pop(node.output[0], []) if node.output else [])
    graph.ClearField("node")
    graph.node.extend(ordered)


def _scale_as_division(model: onnx.ModelProto) -> None:
    """Write eager attention's ``scores * head_size**-0.5`` as ``scores / head_size**0.5``
    (the same to an fp32 rounding): with a Mul, the fusion takes the scale for the mask's Mul
    and matches neither. Only a scalar Mul whose result is added to and then soft-maxed."""
    from onnx import numpy_helper

    graph = model.graph
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    constants = {node.output[0]: numpy_helper.to_array(node.attribute[0].t)
                 for node in graph.node
                 if node.op_type == "Constant" and node.attribute[0].name == "value"}
    for node in graph.node:
        after = users.get(node.output[0], []) if node.op_type == "Mul" else []
        if len(after) != 1 or after[0].op_type != "Add" or [
                n.op_type for n in users.get(after[0].output[0], [])] != ["Softmax"]:
            continue
        scale = constants.get(node.input[1])
        if scale is None or scale.size != 1 or scale.item() == 0:
            continue
        divisor = f"{node.output[0]}_divisor"
        graph.initializer.append(numpy_helper.from_array(
            (1.0 / scale.astype(np.float64)).astype(scale.dtype), divisor))
        node.op_type, node.input[1] = "Div", divisor


class _DropPreprocessingHint(logging.Filter):
    """The quantiser advises shape pre-processing on every call; dynamic int8 does not need it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()
