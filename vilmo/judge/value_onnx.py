"""Networks as int8 ONNX Runtime sessions, built once and cached on disk: the classifier
network, and the plain sentence encoder the instruction step embeds prompts with
(``vilmo.judge.embedder.Int8Embedder``).

On CPUs without AVX-512 VNNI, PyTorch's dynamic int8 is barely faster than fp32; ONNX Runtime's
int8 kernels (per-channel weight scales) are faster there and stay closer to the fp32 logits.
Weights use 7 bits (``reduce_range``): the AVX2 u8×s8 kernels add pairs of products in 16 bits
and saturate with full-range weights, so results would differ between CPUs.
The packaged encoder is never committed, so the int8 graph is made once (``vilmo warmup``, or
on first load): the fp32 network (packaged encoder + committed layers) is exported with torch,
fused for CPU (each layer's attention one ``Attention`` op, its GELU one op: ``vilmo.judge.onnx_export``),
quantised, and cached under a key of everything it was built from. Reading a cached graph needs
only onnxruntime, so a gateway with a warm cache never imports torch. The zero-shot judge's
fp32 encoder is cached the same way, unquantised.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from vilmo.errors import VilmoError
from vilmo.judge.graph_files import cache_dir, cached_file, write_cached
from vilmo.judge.pooling import batch_cost
from vilmo.types import Matrix

if TYPE_CHECKING:
    import onnxruntime as ort
    from torch import nn

EXPORT_VERSION = 4
"""Bump when the export or quantisation recipe changes, so cached graphs are rebuilt. (3: the
key no longer holds torch's version, so a serving process finds the graph without torch. 4:
int8 graphs fused for CPU, ``onnx_export.fuse_for_cpu``.)"""
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
Out = TypeVar("Out")  # what a network gives per batch: logits, or all of a graph's outputs
_SIDE_POOL: ThreadPoolExecutor | None = None
_SIDE_POOL_LOCK = threading.Lock()


def run_batches(net: Callable[[np.ndarray, np.ndarray], Out],
                batches: Sequence[Batch]) -> list[Out]:
    """Each padded batch's output, the batches run side by side on idle cores: the calling
    thread and up to ``serving_cores() - 1`` pool threads each take the next batch not yet
    taken (the costliest first, ``vilmo.judge.pooling.batch_cost``) until none is left. So a
    lone check's batches (cut to be shared out, ``vilmo.judge.pooling.item_batches``, the same
    cut whatever the load) keep every idle core busy, and a large check's many batches are
    shared out over the cores. A pool thread joins (and takes another batch) only while fewer threads than cores
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


def side_pool() -> ThreadPoolExecutor:
    """The process's side threads (``serving_cores() - 1``, at least one) that join a call's
    work while a core is idle (``run_batches``, ``beside``)."""
    global _SIDE_POOL
    with _SIDE_POOL_LOCK:
        if _SIDE_POOL is None:
            _SIDE_POOL = ThreadPoolExecutor(max_workers=max(1, serving_cores() - 1),
                                            thread_name_prefix="vilmo-onnx-side")
        return _SIDE_POOL


Here = TypeVar("Here")
Aside = TypeVar("Aside")


def beside(here: Callable[[], Here], aside: Callable[[], Aside]) -> tuple[Here, Aside]:
    """``here()`` on this thread and ``aside()`` on a side thread at the same time (two
    independent model passes of one request: the instruction step's second look and embedding
    half). ``aside`` runs here, after ``here``, where no side thread has taken it by then (the
    pool busy with a check's batch) or where no core is idle (one core, or checks' batches
    running on all but this one), so a busy machine runs the two in turn as before. Either's
    exception is raised as if both were called here; ``aside`` sees this thread's context
    variables."""
    if serving_cores() <= 1 or _RUNNING.now() >= serving_cores() - 1:
        return here(), aside()
    # In this thread's context (its request's log fields, traces), as asyncio.to_thread runs.
    future = side_pool().submit(contextvars.copy_context().run, aside)
    try:
        first = here()
    except BaseException:
        future.cancel()
        raise
    return first, (aside() if future.cancel() else future.result())


def _side_by_side(net: Callable[[np.ndarray, np.ndarray], Out],
                  batches: Sequence[Batch]) -> list[Out]:
    cores = serving_cores()
    pool = side_pool()
    out: list[Out | None] = [None] * len(batches)
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


class Outputs(Protocol):
    """A network with several outputs (the judge's graph, or its fp32 reference)."""

    def outputs(self, ids: np.ndarray, mask: np.ndarray) -> list[Matrix]: ...


class AllOutputs:
    """A network's every output per call, with its ``threads`` for ``run_batches``."""

    def __init__(self, net: Outputs) -> None:
        self.net, self.threads = net, getattr(net, "threads", 1)

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> list[Matrix]:
        return self.net.outputs(ids, mask)


class GraphMissing(VilmoError, RuntimeError):
    """A graph is not in the cache and this install cannot build it (no torch)."""


def runtime() -> str:
    """What the shipped path runs on, for records of what a calibration was fitted through."""
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}, {RECIPE} (export {EXPORT_VERSION})"


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
        self.shortcut: Callable[[np.ndarray, np.ndarray], list[Matrix] | None] | None = None
        """Another way to this graph's outputs for some batches (None: not this one), bit for
        bit the same: the judge's top layers on the request reader's hidden states
        (``vilmo.instruct.shared_bottom``)."""

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> Matrix:
        return self.outputs(ids, mask)[0]

    def outputs(self, ids: np.ndarray, mask: np.ndarray) -> list[Matrix]:
        """Every output of the graph, in order."""
        shortcut = self.shortcut
        found = shortcut(ids, mask) if shortcut is not None else None
        return found if found is not None else self.graph_outputs(ids, mask)

    def graph_outputs(self, ids: np.ndarray, mask: np.ndarray) -> list[Matrix]:
        """Every output of the graph, run by it (never the shortcut)."""
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


def build_key(*sources: Path, outputs: str = "") -> str:
    """A digest of the files the graph is made from, of the runtime that reads it (not of
    torch: a serving process without torch must find the graph ``vilmo warmup`` made) and of
    ``outputs``, what the network gives (a network that changes its outputs changes it, so an
    older cached graph is never loaded for it; "" for the first graphs' single output)."""
    import onnxruntime

    stamp = f"{EXPORT_VERSION}|{onnxruntime.__version__}" + (f"|{outputs}" if outputs else "")
    digest = hashlib.sha256(stamp.encode())
    for source in sources:
        with source.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def graph_path(kind: str, sources: Sequence[Path], quantized: bool = True,
               outputs: str = "") -> Path:
    """Where the cached graph of ``kind`` made from ``sources`` lives (``build_key``)."""
    suffix = "int8" if quantized else "fp32"
    return cache_dir() / "onnx" / f"{kind}-{build_key(*sources, outputs=outputs)}.{suffix}.onnx"


def int8_session(build: Callable[[], nn.Module], sources: Sequence[Path],
                 threads: int = SERVING_THREADS, kind: str = "value_classifier",
                 quantized: bool = True, outputs: str = "") -> Int8Session:
    """The cached graph (int8, or fp32 when not ``quantized``) of the network ``build()`` makes
    (fp32, eval mode, ``(ids, mask) -> one tensor``), whose weights come from the files
    ``sources``; exported (torch needed) only if missing. ``kind`` names the cached file, so
    different networks built from the same files never share one.

    The file is written under a temporary name and renamed, so concurrent processes never read
    a half-written graph; where the cache is not writable, the graph lives in a temp dir.
    ``outputs``: what the network gives, in the cache key (``build_key``).
    """
    return shared_session(cached_graph(build, sources, kind, quantized, outputs), threads)


def cached_graph(build: Callable[[], nn.Module], sources: Sequence[Path],
                 kind: str = "value_classifier", quantized: bool = True,
                 outputs: str = "") -> Path:
    """The cached graph's file (``int8_session``), exported first if missing; not loaded."""
    target = graph_path(kind, sources, quantized, outputs)
    found = cached_file(target)
    if found is not None:
        return found
    net = _buildable(build, target)
    from vilmo.judge import onnx_export

    return write_cached(target, lambda partial: onnx_export.export_graph(net, partial, quantized))


def _buildable(build: Callable[[], nn.Module], target: Path) -> nn.Module:
    try:
        import torch  # noqa: F401 - only to tell a missing torch from a failing build
    except ImportError as exc:
        raise GraphMissing(
            f"the ONNX graph {target.name} is not in the cache ({target.parent}) and torch, "
            "which builds it, is not installed: run `vilmo warmup` with torch installed and "
            "the same VILMO_CACHE_DIR") from exc
    return build()
