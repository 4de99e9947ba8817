"""The reply check's cost with a reply's whole windows after its prompt pooled over every token
("all") or over the reply's own tokens ("reply", ``window.whole_pooling``), each with the
reading alone (``window.alone_weight`` 0.25, a second set of windows) or without it (0), in
one process, interleaved round by round (a benchmark, not a test): ``BuiltinClassifier.score``
of the serving benchmark's 122-word reply after a distinct prompt each call (no cache), one
ONNX thread per call as the gateway runs. Prints each arm's median milliseconds and its ratio
to the first arm (the shipped config before issue 17's reply pooling: "all", 0.25).

    python bench/bench_whole_pooling.py [--rounds 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from bench_serving import REPLY
from bench_span_reading import cpu
from harness import prompts

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier

ARMS = {"all, alone 0.25": ("all", 0.25), "reply, alone 0.25": ("reply", 0.25),
        "all, no alone pass": ("all", 0.0), "reply, no alone pass": ("reply", 0.0)}


def arm(pooling: str, alone: float) -> BuiltinClassifier:
    """The shipped weights pooling their whole windows as ``pooling``, read alone at ``alone``."""
    model = BuiltinClassifier(cache_size=0)
    loaded = model._model()
    model._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(
        loaded.spec, whole_pooling=pooling, reply_weight=1.0, alone_weight=alone))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    models = {name: arm(*how) for name, how in ARMS.items()}
    questions = prompts(args.rounds + 5)
    for model in models.values():  # warm: sessions, thread pool, allocator
        for q in questions[-5:]:
            model.score([ScoreInput(REPLY, q)], BUILTIN_VALUES)
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for i, question in enumerate(questions[:args.rounds]):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            models[name].score([ScoreInput(REPLY, question)], BUILTIN_VALUES)
            times[name].append(1000 * (time.perf_counter() - start))
    base = names[0]
    for name in names:
        ratio = statistics.median(t / b for t, b in zip(times[name], times[base], strict=True))
        print(f"{name:22s} median {statistics.median(times[name]):7.2f} ms  "
              f"p90 {statistics.quantiles(times[name], n=10)[-1]:7.2f} ms  "
              f"/ {base}, median of the rounds' ratios {ratio:.2f}")
    print(f"{args.rounds} rounds, interleaved; CPU: {cpu()}")


if __name__ == "__main__":
    main()
