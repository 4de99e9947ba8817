"""The reply check's cost with sentence spans read as rows of their own ("rows", the reading up
to issue 16), "ranked" (the config's: span rows only for a reply whose pooled reading of its
spans reaches ``span_gate``) or pooled inside the whole window ("pooled"), in one process,
interleaved round by round (a benchmark, not a test): ``BuiltinClassifier.score`` of the
serving benchmark's 122-word
reply after a distinct prompt each call (no cache), one ONNX thread per call as the gateway
runs. Prints the median milliseconds of each reading, its ratio to "rows", the tokens each
runs, and the CPU.

    python bench/bench_span_reading.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import subprocess
import time

from bench_serving import REPLY
from harness import prompts

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier


def cpu() -> str:
    """The CPU's model name (``lscpu``), else the platform's."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in out.splitlines()
             if line.startswith("Model name")]
    return names[0] if names else platform.processor()


def reading(span_reading: str) -> BuiltinClassifier:
    """The shipped weights reading spans as ``span_reading`` (the config's ``span_rows`` and
    ``span_gate``)."""
    model = BuiltinClassifier(cache_size=0)
    loaded = model._model()
    model._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(
        loaded.spec, span_reading=span_reading))
    return model


def rows_run(model: BuiltinClassifier, item: ScoreInput) -> list[list[int]]:
    """The token rows ``model`` runs for ``item`` (with "ranked", the span rows it chose)."""
    from vilmo.judge.window_rows import pooled_spans, ranked_spans

    read = model._rows([item], sentences=True, alone=True)
    spec = model._model().spec
    if spec.span_reading != "ranked":
        return read.rows
    _, tokens = model._run(read.rows, read.owner, {p.row for p in read.places})
    spans = pooled_spans(tokens, read.places, len(model._model().names))
    chosen = ranked_spans(read.places, model._span_scores(spans), spec.span_rows,
                          spec.span_gate)
    return read.rows + [r for k in chosen for r in read.span_rows[k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    models = {name: reading(name) for name in ("rows", "ranked", "pooled")}
    questions = prompts(args.rounds + 5)
    for name, model in models.items():  # warm: sessions, thread pool, allocator
        for q in questions[-5:]:
            model.score([ScoreInput(REPLY, q)], BUILTIN_VALUES)
    times: dict[str, list[float]] = {name: [] for name in models}
    for i, question in enumerate(questions[:args.rounds]):
        order = list(models)[i % 3:] + list(models)[:i % 3]
        for name in order:
            start = time.perf_counter()
            models[name].score([ScoreInput(REPLY, question)], BUILTIN_VALUES)
            times[name].append(1000 * (time.perf_counter() - start))
    item = ScoreInput(REPLY, questions[0])
    for name, model in models.items():
        rows = rows_run(model, item)
        spans = sum(len(rows_run(model, ScoreInput(REPLY, q))) > len(rows_run(
            models["pooled"], ScoreInput(REPLY, q))) for q in questions[:args.rounds])
        ratio = statistics.median(t / r for t, r in zip(times[name], times["rows"], strict=True))
        print(f"{name:7s} median {statistics.median(times[name]):7.2f} ms  "
              f"p90 {statistics.quantiles(times[name], n=10)[-1]:7.2f} ms  "
              f"rows run {len(rows):2d}  tokens {sum(map(len, rows)):4d}  "
              f"/ rows, median of the rounds' ratios {ratio:.2f}; "
              f"span rows run in {spans} of {args.rounds} rounds")
    print(f"{args.rounds} rounds, interleaved; CPU: {cpu()}")


if __name__ == "__main__":
    main()
