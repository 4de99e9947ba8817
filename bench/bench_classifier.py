"""Benchmark the built-in value classifier on CPU (a benchmark, not a test).

Prints one JSON object: the plain fp32 sentence encoder's rate (the reference), the classifier's
batched rate through every built-in value (int8 and fp32), single-reply latency, and the
micro-batcher's rate under concurrent calls. Rates are medians over rounds that alternate the
baseline and the classifier. int8 is the shipped path (ONNX Runtime, see
``vilmo.judge.value_onnx``); fp32 is the PyTorch network it is exported from. ``int8, one core``
is the same int8 path with every padded batch in the calling thread (``serving_cores`` = 1), so
the gain of running a check's batches side by side on the cores is measured in the same rounds
(the scores are the same either way). Each arm's CPU milliseconds per reply (all threads) and
the load average before and after are printed too: on a shared machine the rates say more
about the neighbours than about the code. Texts are ~60-word
synthetic replies, all distinct, so no cache helps. Usage:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_classifier.py --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import time
from collections.abc import Iterator

SENTENCES = (
    "The assistant explained how to repot the plant without damaging its roots.",
    "You can save money by planning meals for the week and buying in bulk.",
    "It is a good idea to check the tyre pressure before a long drive.",
    "Regular exercise and enough sleep help most people feel better.",
    "The museum opens at nine and the tickets are cheaper online.",
    "If the code fails, read the error message and search for the function name.",
    "Talk to your manager early if the deadline looks unrealistic.",
    "Mix the flour and butter first, then add the cold water slowly.",
    "Backing up your photos to two places protects them from a broken disk.",
    "The train is usually faster than driving during rush hour.",
    "Write down three things you want to achieve before the meeting.",
    "Drinking water before meals can help you notice when you are full.",
)


INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
"""CPU features that decide which int8 kernels run (a VM may hide the model name)."""


def cpu_info() -> dict[str, object]:
    """The CPU model and its int8-relevant features: int8 speed depends on them."""
    name, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if name != "unknown" and flags:
                    break
    except OSError:
        pass
    return {"cpu": name, "cpu_int8_features": [f for f in INT8_FLAGS if f in flags]}


def replies(n: int, words: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text: list[str] = []
        while len(text) < words:
            text += rng.choice(SENTENCES).split()
        out.append(f"Reply {i}: " + " ".join(text[:words]))
    return out


CPU_MS: dict[str, list[float]] = {}
"""Per measured arm, the process's CPU milliseconds per text in each round."""


def rate(fn: object, texts: list[str], arm: str = "") -> float:
    """Texts per second of wall time; the CPU time (all threads) per text goes to ``CPU_MS``,
    which a shared machine inflates less than the wall time."""
    cpu, start = time.process_time(), time.perf_counter()
    fn(texts)  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    CPU_MS.setdefault(arm, []).append((time.process_time() - cpu) * 1000 / len(texts))
    return len(texts) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="alternated measurements per rate")
    ap.add_argument("--model-dir", default=None, help="weights to measure (default: shipped)")
    ap.add_argument("--prompt", default=None,
                    help="read every reply after this prompt (default: plain replies; a reply "
                         "after a prompt is also read alone when the config's "
                         "window.alone_weight > 0)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.embedder import packaged_model_path
    from vilmo.judge.heads import BUILTIN_VALUES
    from vilmo.judge.value_model import BuiltinClassifier

    load_before = os.getloadavg()[0]
    texts = replies(args.n + 200)
    warm, batch_texts, single = texts[:32], texts[32:32 + args.n], texts[32 + args.n:]
    plain = SentenceTransformer(str(packaged_model_path()), device="cpu")
    plain.encode(warm, batch_size=64)
    models = {name: BuiltinClassifier(args.model_dir, quantize=quantize,
                                      batch_size=args.batch_size, cache_size=0)
              for name, quantize in (("int8", True), ("fp32", False))}
    for clf in models.values():
        clf.score([ScoreInput(t) for t in warm], BUILTIN_VALUES)

    # Rounds alternate the baseline and the classifier, so a slow spell of a shared machine
    # hits both; the figures are medians over rounds, the ratio is taken within each round.
    rounds: dict[str, list[float]] = {"plain": [], "int8": [], "int8_one_core": [], "fp32": []}
    for _ in range(args.rounds):
        rounds["plain"].append(rate(lambda t: plain.encode(t, batch_size=64), batch_texts))
        for name, clf in models.items():
            rounds[name].append(rate(
                lambda t, c=clf: c.score([ScoreInput(x, args.prompt) for x in t], BUILTIN_VALUES),
                batch_texts, name))
        with _one_core():
            rounds["int8_one_core"].append(rate(
                lambda t: models["int8"].score([ScoreInput(x, args.prompt) for x in t],
                                               BUILTIN_VALUES),
                batch_texts, "int8_one_core"))
    ratios = [c / p for c, p in zip(rounds["int8"], rounds["plain"], strict=True)]
    core_gain = [c / o for c, o in zip(rounds["int8"], rounds["int8_one_core"], strict=True)]
    results: dict[str, object] = {**cpu_info(),
                                  "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                  "onnxruntime": onnxruntime.__version__,
                                  "threads": args.threads, "texts": args.n, "words": 60,
                                  "rounds": args.rounds, "prompt": args.prompt,
                                  "plain_fp32_encoder_texts_per_s": _median(rounds["plain"]),
                                  "classifier_int8_replies_per_s": _median(rounds["int8"]),
                                  "classifier_int8_replies_per_s_range": [
                                      round(min(rounds["int8"]), 1),
                                      round(max(rounds["int8"]), 1)],
                                  "int8_over_plain_encoder": round(statistics.median(ratios), 2),
                                  "classifier_int8_one_core_replies_per_s": _median(
                                      rounds["int8_one_core"]),
                                  "int8_over_one_core": round(statistics.median(core_gain), 2),
                                  "classifier_fp32_replies_per_s": _median(rounds["fp32"]),
                                  "classifier_int8_cpu_ms_per_reply": round(
                                      statistics.median(CPU_MS["int8"]), 2),
                                  "classifier_int8_one_core_cpu_ms_per_reply": round(
                                      statistics.median(CPU_MS["int8_one_core"]), 2)}
    for name, clf in models.items():
        latencies = []
        for t in single[:60]:
            start = time.perf_counter()
            clf.score([ScoreInput(t, args.prompt)], BUILTIN_VALUES)
            latencies.append((time.perf_counter() - start) * 1000)
        results[f"classifier_{name}_single_ms_median"] = round(statistics.median(latencies), 2)
        results[f"classifier_{name}_single_ms_p90"] = round(
            sorted(latencies)[int(0.9 * len(latencies))], 2)
    results["micro_batcher_int8_replies_per_s"] = round(
        asyncio.run(_batched(models["int8"], batch_texts, args.prompt)), 1)
    results["rounds_replies_per_s"] = {name: [round(r, 1) for r in rates]
                                       for name, rates in rounds.items()}
    results["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(results, indent=1))


@contextlib.contextmanager
def _one_core() -> Iterator[None]:
    """The shipped int8 path with every padded batch run in the calling thread."""
    from vilmo.judge import value_onnx

    cores = value_onnx.serving_cores
    value_onnx.serving_cores = lambda: 1
    try:
        yield
    finally:
        value_onnx.serving_cores = cores


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


async def _batched(clf: object, texts: list[str], prompt: str | None) -> float:
    from vilmo.judge.batcher import MicroBatcher
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.heads import BUILTIN_VALUES

    batcher = MicroBatcher(clf, max_batch=64)  # type: ignore[arg-type]
    items = [ScoreInput("Again: " + t, prompt) for t in texts]
    start = time.perf_counter()
    await asyncio.gather(*(batcher.score(i, BUILTIN_VALUES) for i in items))
    elapsed = time.perf_counter() - start
    await batcher.aclose()
    return len(items) / elapsed


if __name__ == "__main__":
    main()
