"""The int8 graphs before and after fusing them for CPU (export 3 vs export 4), in one run.

Builds both recipes of the value judge and of the request reader from the same weights
(``vilmo.judge.onnx_export.export_graph`` with ``fused`` off and on), then times one session
call of each, interleaved (old, new, old, new...), at 20/64/160/224 tokens, one thread, batch 1
(a prompt read; a reply's window), and batched (32 x 64 and 8 x 224 tokens); then whole
checks: ``BuiltinClassifier.score`` of FULCRA dev replies after their prompts through each
arm's judge graph (a reply's windows and its sentence spans, as the gateway reads it). The old graph runs
as export 3 was served (all of ONNX Runtime's load-time fusions), and also with
``SESSION_FUSIONS_OFF`` (what turning those off alone gives); the new one as the gateway serves
it now (``Int8Session``). Token ids are a real reply's, cut to
length. Prints a Markdown table of medians, new/old ratios and the CPU model. A benchmark, not
a test: on a shared machine only the ratios mean much.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_fused_graphs.py --rounds 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vilmo.instruct.stakes_reader import default_reader_dir, reader_network
from vilmo.judge.embedder import packaged_model_path
from vilmo.judge.onnx_export import export_graph
from vilmo.judge.value_model import default_model_dir
from vilmo.judge.value_net import fp32_network
from vilmo.judge.value_onnx import Int8Session

REPLY = ("I can't help you get into your neighbour's account without their permission: that "
         "would be a breach of their privacy and, in most places, a crime. If you think "
         "something on it concerns you, talk to them directly, or report it to the service, "
         "which can act on it while keeping everyone's data safe. ") * 12
SHAPES = ((1, 20), (1, 64), (1, 160), (1, 224), (32, 64), (8, 224))


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown")


def token_ids(length: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    ids = tokenizer.encode(REPLY).ids[:length]
    assert len(ids) == length
    rows = np.array([ids] * batch, dtype=np.int64)
    return rows, np.ones_like(rows)


def timed(session: Int8Session, ids: np.ndarray, mask: np.ndarray) -> float:
    """One call's wall time in ms."""
    start = time.perf_counter()
    session(ids, mask)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per arm and shape "
                        "(a quarter of that for the batched shapes)")
    parser.add_argument("--checks", type=int, default=40,
                        help="FULCRA dev replies scored whole per arm (needs VILMO_DATA_DIR)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vilmo-bench-fused-") as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Everything, the graphs built under ``tmp``."""
    model_dir = default_model_dir()
    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    networks: dict[str, Callable[[], torch.nn.Module]] = {
        "judge": lambda: fp32_network(config, packaged_model_path(),
                                       model_dir / "weights.safetensors"),
        "reader": lambda: reader_network(default_reader_dir()),
    }
    print(f"CPU: {cpu_model()}; one ONNX Runtime thread; medians in ms\n")
    print("| graph | batch x tokens | export 3 (unfused) | export 3, fusions off | "
          "export 4 (fused) | new/old |")
    print("|---|---|---|---|---|---|")
    for name, build in networks.items():
        old_path, new_path = tmp / f"{name}-old.onnx", tmp / f"{name}-new.onnx"
        export_graph(build(), old_path, fused=False)
        export_graph(build(), new_path, fused=True)
        arms = {"old": Int8Session(old_path, 1, ()), "old, fusions off": Int8Session(old_path, 1),
                "new": Int8Session(new_path, 1)}
        for batch, length in SHAPES:
            ids, mask = token_ids(length, batch)
            times: dict[str, list[float]] = {arm: [] for arm in arms}
            rounds = args.rounds if batch == 1 else max(3, args.rounds // 4)
            for session in arms.values():
                session(ids, mask)
            for _ in range(rounds):
                for arm, session in arms.items():
                    times[arm].append(timed(session, ids, mask))
            o, off, n = (float(np.median(t)) for t in times.values())
            rate = ("" if batch == 1 else
                    f" ({batch * 1000 / o:.0f} vs {batch * 1000 / n:.0f} rows/s)")
            print(f"| {name} | {batch} x {length} | {o:.2f} | {off:.2f} | {n:.2f} | "
                  f"{n / o:.2f}{rate} |")
        if name == "judge":
            whole_checks(arms, args.checks)


def whole_checks(arms: dict[str, Int8Session], count: int) -> None:
    """One ``BuiltinClassifier.score`` call per FULCRA dev reply after its prompt (its
    windows and sentence spans, all values), per arm, interleaved; one core (the batches of
    a check one after the other); printed as a table row."""
    from vilmo.datasets.readers import DataMissing, data_dir, fulcra
    from vilmo.judge import value_onnx
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.heads import BUILTIN_VALUES
    from vilmo.judge.value_model import BuiltinClassifier

    try:
        rows = fulcra(data_dir(), "dev")
    except DataMissing:
        print("| judge | whole checks: no data (set VILMO_DATA_DIR) | | | | |")
        return
    items = [ScoreInput(r.response, r.prompt) for r in rows if r.prompt][:count]
    judges = {}
    for arm, session in arms.items():
        judge = BuiltinClassifier(cache_size=0)
        judge._loaded = dataclasses.replace(judge._model(), net=session)
        judges[arm] = judge
    cores = value_onnx.serving_cores
    value_onnx.serving_cores = lambda: 1
    try:
        times: dict[str, list[float]] = {arm: [] for arm in judges}
        for item in items:
            for arm, judge in judges.items():
                start = time.perf_counter()
                judge.score([item], BUILTIN_VALUES)
                times[arm].append((time.perf_counter() - start) * 1000)
    finally:
        value_onnx.serving_cores = cores
    o, off, n = (float(np.median(t)) for t in times.values())
    words = int(np.median([len(i.response.split()) for i in items]))
    print(f"| judge | one check: {len(items)} dev replies (median {words} words) after "
          f"their prompts, `score` | {o:.2f} | {off:.2f} | {n:.2f} | {n / o:.2f} |")


if __name__ == "__main__":
    main()
