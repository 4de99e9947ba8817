"""CPU per check of the value judge's ONNX Runtime session, as the gateway used to configure it
(intra-op threads = cores, ONNX Runtime's default spin-waiting) and as it does now (one thread,
no spinning), on the same cached graph, in one run with alternating rounds (a benchmark, not a
test). CPU is the process's user+system time, so a pool thread spinning between calls counts.

    python bench/bench_sessions.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_classifier import cpu_info, replies


class SpinningSession:
    """The session as built before issue 16: ``threads`` intra-op threads, spinning on."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options,
                                             providers=["CPUExecutionProvider"])

    def __call__(self, ids: object, mask: object) -> object:
        return self._session.run(None, {"ids": ids, "mask": mask})[0]


def measure(clf: object, texts: list[str], workers: int) -> tuple[float, float, float]:
    """(wall ms per check, CPU ms per check, checks per second): single-reply checks, from
    ``workers`` threads at once (the gateway checks requests in parallel)."""
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.heads import BUILTIN_VALUES

    def one(text: str) -> float:
        started = time.perf_counter()
        clf.score([ScoreInput(text, "What should I do?")], BUILTIN_VALUES)  # type: ignore[attr-defined]
        return time.perf_counter() - started

    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        latencies = list(pool.map(one, texts))
    wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    return (statistics.median(latencies) * 1000, cpu_s * 1000 / len(texts), len(texts) / wall_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=60, help="checks per round and setting")
    args = parser.parse_args()
    from vilmo.judge.value_model import BuiltinClassifier

    after = BuiltinClassifier(cache_size=0)
    after.warm_up()
    before = BuiltinClassifier(cache_size=0)
    before.warm_up()
    loaded = before._model()  # swap in the old session, on the same graph
    before._loaded = dataclasses.replace(
        loaded, net=SpinningSession(after.graph_path(), os.cpu_count() or 1))
    texts = replies(args.rounds * args.n * 4 + 20, words=110)
    measure(before, texts[:10], 1)
    measure(after, texts[10:20], 1)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    at = 20
    for _ in range(args.rounds):
        for workers in (1, 2):
            for name, clf in (("before", before), ("after", after)):
                chunk, at = texts[at:at + args.n], at + args.n
                rows.setdefault(f"{name}, {workers} at once", []).append(
                    measure(clf, chunk, workers))
    out: dict[str, object] = {**cpu_info(), "cores": os.cpu_count(), "rounds": args.rounds,
                              "reply_words": 110}
    for key, values in rows.items():
        out[key] = {"wall_ms_p50": round(statistics.median(v[0] for v in values), 1),
                    "cpu_ms_per_check": round(statistics.median(v[1] for v in values), 1),
                    "checks_per_s": round(statistics.median(v[2] for v in values), 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
