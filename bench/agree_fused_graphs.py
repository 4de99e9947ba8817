"""Do the fused int8 graphs (export 4) compute what the unfused ones (export 3) did?

Scores dev texts through both recipes' graphs and compares the difference with int8 batching
noise: the same texts through the old graph in another batch composition (activations are
quantised per batch, so the batch a text shares changes its scores a little). Judge: the
calibrated value scores (``BuiltinClassifier.score``) of FULCRA and HH dev replies after their
prompts, max and p99 absolute difference, and the share of flag decisions (score >= 0.5) that
change. Request reader: the calibrated gate probability of dev prompts, the same figures at the
gate's threshold, and the embedding's cosine; the plain int8 prompt encoder: the cosine.

    VILMO_CACHE_DIR=/tmp/agree-cache python bench/agree_fused_graphs.py --items 300
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vilmo.datasets.readers import data_dir, fulcra, hh_chosen, saferlhf
from vilmo.instruct.stakes_reader import StakesReader, reader_network
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.embedder import DIMENSIONS, Int8Embedder, _sentence_net, packaged_model_path
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.onnx_export import export_graph
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.value_net import fp32_network
from vilmo.judge.value_onnx import Int8Session
from vilmo.judge.windowing import pad_numpy
from vilmo.numeric import sigmoid


def judge_items(count: int) -> list[ScoreInput]:
    """FULCRA dev replies (two thirds) and HH dev replies (one third), with their prompts."""
    root = data_dir()
    rows = [ScoreInput(r.response, r.prompt) for r in fulcra(root, "dev")][: count * 2 // 3]
    rows += [ScoreInput(reply, prompt) for prompt, reply in hh_chosen(root, "dev")]
    return rows[:count]


def reader_prompts(count: int) -> list[str]:
    """Dev prompts: FULCRA's and SafeRLHF's test questions."""
    root = data_dir()
    prompts = [r.prompt for r in fulcra(root, "dev") if r.prompt][: count // 2]
    prompts += [q for q, _ in saferlhf(root, "test")]
    return list(dict.fromkeys(prompts))[:count]


def scores(classifier: BuiltinClassifier, items: Sequence[ScoreInput],
           chunk: int | None = None) -> np.ndarray:
    """Items x values calibrated violation scores; ``chunk``: score calls of that many items
    (another batch composition)."""
    chunks = [items] if chunk is None else [items[i:i + chunk]
                                            for i in range(0, len(items), chunk)]
    out = [s for part in chunks for s in classifier.score(part, BUILTIN_VALUES)]
    return np.array([[s.violation[v] for v in BUILTIN_VALUES] for s in out])


def compare(name: str, a: np.ndarray, b: np.ndarray, threshold: float) -> None:
    diff = np.abs(a - b).ravel()
    flips = np.mean((a >= threshold) != (b >= threshold))
    changed = int(np.sum((a >= threshold) != (b >= threshold)))
    print(f"| {name} | {diff.max():.4f} | {np.percentile(diff, 99):.4f} | "
          f"{np.mean(diff):.5f} | {changed} / {a.size} ({100 * flips:.2f} %) |")


def on_graph(classifier: BuiltinClassifier, graph: Path) -> BuiltinClassifier:
    """``classifier`` reading ``graph`` (served as export 3 was: no fusions turned off)."""
    loaded = classifier._model()
    classifier._loaded = dataclasses.replace(loaded, net=Int8Session(graph, 1, ()))
    return classifier


def reader_rows(reader: StakesReader, session: Int8Session, prompts: Sequence[str],
                batch: int) -> np.ndarray:
    tokenizer = reader._load_tokenizer()
    out = []
    for start in range(0, len(prompts), batch):
        ids, mask = pad_numpy([e.ids for e in tokenizer.encode_batch(
            list(prompts[start:start + batch]))])
        out.append(session(ids, mask))
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vilmo-agree-") as folder:
        run(args, Path(folder))


def run(args: argparse.Namespace, tmp: Path) -> None:
    """Everything, the graphs built under ``tmp``."""
    judge = BuiltinClassifier()
    judge.warm_up()  # the fused graph (export 4), cached
    old_graph = tmp / "judge_unfused.onnx"
    config = judge.config
    export_graph(fp32_network(config, packaged_model_path(), judge.model_dir / "weights.safetensors"),
                 old_graph, fused=False)
    items = judge_items(args.items)
    new = scores(judge, items)
    old = scores(on_graph(BuiltinClassifier(), old_graph), items)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(items))
    shuffled = scores(on_graph(BuiltinClassifier(), old_graph), [items[i] for i in order], 7)
    noise = np.empty_like(shuffled)
    noise[order] = shuffled
    print(f"judge: {len(items)} dev replies x {len(BUILTIN_VALUES)} values, calibrated scores")
    print("| pair | max abs diff | p99 | mean | flags changed (>= 0.5) |\n|---|---|---|---|---|")
    compare("fused vs unfused (same batches)", new, old, 0.5)
    compare("noise: unfused, other batches", noise, old, 0.5)

    reader = StakesReader(threads=1)
    reader.warm_up()
    sources = reader._sources()
    from vilmo.judge.value_onnx import graph_path

    new_reader = Int8Session(graph_path("stakes_reader", sources), 1)
    old_reader_graph = tmp / "reader_unfused.onnx"
    export_graph(reader_network(reader.model_dir), old_reader_graph, fused=False)
    old_reader = Int8Session(old_reader_graph, 1, ())
    prompts = reader_prompts(args.items)
    order = rng.permutation(len(prompts))
    rows_new = reader_rows(reader, new_reader, prompts, 32)
    rows_old = reader_rows(reader, old_reader, prompts, 32)
    rows_noise = np.empty_like(rows_old)
    rows_noise[order] = reader_rows(reader, old_reader, [prompts[i] for i in order], 7)

    def gate(rows: np.ndarray) -> np.ndarray:
        return np.asarray(sigmoid(reader._a * rows[:, DIMENSIONS] + reader._b))

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.min(np.sum(a[:, :DIMENSIONS] * b[:, :DIMENSIONS], axis=1)))

    print(f"\nreader: {len(prompts)} dev prompts, gate probability, threshold "
          f"{reader.threshold}")
    print("| pair | max abs diff | p99 | mean | decisions changed |\n|---|---|---|---|---|")
    compare("fused vs unfused (same batches)", gate(rows_new), gate(rows_old), reader.threshold)
    compare("noise: unfused, other batches", gate(rows_noise), gate(rows_old), reader.threshold)
    print(f"\nembedding: min cosine fused vs unfused {cosine(rows_new, rows_old):.5f}, "
          f"noise {cosine(rows_noise, rows_old):.5f}")

    # The plain int8 prompt encoder (the instruction step's encoder where no reader ships).
    encoder = Int8Embedder(cache_size=0)
    encoder.warm_up()
    old_encoder_graph = tmp / "encoder_unfused.onnx"
    export_graph(_sentence_net(packaged_model_path()), old_encoder_graph, fused=False)
    old_encoder = Int8Session(old_encoder_graph, 1, ())
    new_encoder = Int8Session(encoder.graph_path(), 1)
    vectors_new = reader_rows(reader, new_encoder, prompts, 32)
    vectors_old = reader_rows(reader, old_encoder, prompts, 32)
    vectors_noise = np.empty_like(vectors_old)
    vectors_noise[order] = reader_rows(reader, old_encoder, [prompts[i] for i in order], 7)
    print(f"prompt encoder (Int8Embedder): min cosine fused vs unfused "
          f"{cosine(vectors_new, vectors_old):.5f}, noise {cosine(vectors_noise, vectors_old):.5f}")


if __name__ == "__main__":
    main()
