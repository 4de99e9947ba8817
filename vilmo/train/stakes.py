"""Train and measure the values-at-stake model (``vilmo.stakes``).

Embeddings: the unit-length all-MiniLM-L6-v2 embedding of the prompt through the int8 graph the
gateway runs (``vilmo.embedder.Int8Embedder``), so the weights see what they will see in service.

Model, two parts:
- The gate: P(some value is at stake | prompt), a network with one hidden layer (a linear gate
  passed 60 % of dev SafeRLHF questions where this one passes 70 %, at the same share of
  everyday prompts). Positives: labelled SafeRLHF questions and the moral stories; negatives:
  everyday prompts (HH helpful Human turns and the project's everyday questions). Each class
  weighs half and each source equally within its class (drawn with replacement), so the
  probability is for an even mix of everyday and value-laden prompts. The operating threshold
  is chosen on dev: it passes at most ``GATE_BENIGN_TARGET`` of the dev everyday requests.
- Per value, an L2-regularised logistic regression on the same embedding (one binary head per
  value, trained on its system's prompts only; C chosen per system on dev). Safety: SafeRLHF
  harm categories; Schwartz: FULCRA and ValueEval; Moral Foundations: the moral stories'
  foundations and, for SafeRLHF questions, the foundations their harms go against
  (``vilmo.values.HARM_FOUNDATIONS``), sources weighted equally. Everyday prompts are negatives
  for every head.
The baseline for the heads is plain similarity: the cosine between the prompt and the value's
prototype, the normalised mean embedding of its definition and its principles' texts. Figures:
recall@k of the labelled values on held-out prompts (k = 3; 1 for the five foundations), and the
gate's pass rate per held-out source, with 95 % bootstrap CIs (prompts resampled).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilmo.data import VALUEEVAL_TO_SCHWARTZ
from vilmo.embedder import TextEncoder
from vilmo.metrics import bootstrap_ci
from vilmo.principles import PrincipleBank
from vilmo.stakes import StakesModel
from vilmo.train.stakes_data import BENIGN, EVERYDAY, SOURCES, LabelledPrompt, stakes_prompts
from vilmo.train.stakes_gate import balanced_weights, evaluate_gate, fit_gate
from vilmo.types import Matrix
from vilmo.values import HARM_FOUNDATIONS, VALUES, values_in

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
LABELLED_SYSTEMS = ("safety", "schwartz", "mft")
BALANCED_SYSTEMS = ("mft",)
"""Systems whose heads weigh their sources equally (the moral stories are 115 of ~14,500)."""
K_BY_SYSTEM = {"mft": 1}
"""recall@3 of five foundations says little; the foundations are measured at k = 1."""


@dataclass(frozen=True, slots=True)
class StakesSettings:
    seed: int = 13
    k: int = 3
    bootstrap_rounds: int = 1000
    cache_dir: Path | None = None
    """Where prompt embeddings are cached between runs (outside the repository)."""


def embed(encoder: TextEncoder, texts: Sequence[str], cache_dir: Path | None) -> Matrix:
    """Embeddings of many texts; with a cache folder, texts embedded before are not redone."""
    known: dict[str, int] = {}
    cached = np.zeros((0, 0), dtype=np.float32)
    if cache_dir and (cache_dir / "texts.json").exists():
        known = {t: i for i, t in enumerate(json.loads((cache_dir / "texts.json").read_text()))}
        cached = np.load(cache_dir / "embeddings.npy")
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    if missing:
        fresh = np.concatenate([encoder.encode(missing[i:i + 512])
                                for i in range(0, len(missing), 512)]).astype(np.float32)
        cached = fresh if not known else np.concatenate([cached, fresh])
        known.update({t: len(known) + i for i, t in enumerate(missing)})
        if cache_dir:
            cache_dir.mkdir(parents=True, exist_ok=True)
            np.save(cache_dir / "embeddings.npy", cached)
            (cache_dir / "texts.json").write_text(json.dumps(list(known)))
    out: Matrix = cached[[known[t] for t in texts]]
    return out


def prototypes(encoder: TextEncoder, bank: PrincipleBank) -> Matrix:
    """One unit vector per value id: the mean embedding of its definition and principles."""
    rows = []
    for value in VALUES.values():
        texts = [f"{value.name}: {value.definition}"]
        texts += [p.text for p in bank.principles if p.value == value.id]
        centre = encoder.encode(texts).mean(axis=0)
        rows.append(centre / np.linalg.norm(centre))
    return np.stack(rows).astype(np.float32)


def recall_at_k(scores: Matrix, labels: Sequence[Sequence[int]], k: int) -> np.ndarray:
    """Per prompt: the share of its labelled columns among its k highest-scoring columns."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.array([len(set(top[i].tolist()) & set(lab)) / len(lab)
                     for i, lab in enumerate(labels)], dtype=np.float64)


def system_labels(row: LabelledPrompt, system: str) -> tuple[str, ...] | None:
    """The row's labels for one system's heads; None when the row does not train them.
    Everyday prompts are negatives for every system; SafeRLHF's harms name foundations."""
    if row.system is None:
        return ()
    if row.system == system:
        return row.labels
    if system == "mft" and row.system == "safety":
        return tuple(sorted({f for harm in row.labels for f in HARM_FOUNDATIONS[harm]}))
    return None


def _columns(system: str) -> list[int]:
    ids = list(VALUES)
    return [ids.index(v.id) for v in values_in(system)]  # type: ignore[arg-type]


def _label_columns(labels: Sequence[Sequence[str]], cols: list[int]) -> list[list[int]]:
    ids = list(VALUES)
    return [[cols.index(ids.index(v)) for v in lab] for lab in labels]


def _fit_system(x: Matrix, y: np.ndarray, c: float, seed: int,
                sample_weight: np.ndarray | None = None) -> tuple[Matrix, np.ndarray]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    w = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    b = np.zeros(y.shape[1], dtype=np.float32)
    for j in range(y.shape[1]):
        if y[:, j].min() == y[:, j].max():
            b[j] = 10.0 if y[0, j] else -10.0
            continue
        with threadpool_limits(1):  # BLAS threads only contend on a few shared cores
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
                x, y[:, j], sample_weight=sample_weight)
        w[j], b[j] = model.coef_[0], model.intercept_[0]
    return w, b


def train_stakes(root: Path, encoder: TextEncoder, out: Path,
                 settings: StakesSettings = StakesSettings()) -> dict[str, Any]:
    """Fit the model on the train split, choose C on dev, measure on held-out, save weights."""
    started = time.time()
    rows = stakes_prompts(root)
    x = embed(encoder, [r.text for r in rows], settings.cache_dir)
    proto = prototypes(encoder, PrincipleBank.load())
    ids = list(VALUES)
    weights = np.zeros((len(ids), x.shape[1]), dtype=np.float32)
    bias = np.zeros(len(ids), dtype=np.float32)
    chosen: dict[str, float] = {}
    for system in LABELLED_SYSTEMS:
        cols = _columns(system)
        k = K_BY_SYSTEM.get(system, settings.k)
        train = [i for i, r in enumerate(rows)
                 if r.split == "train" and system_labels(r, system) is not None]
        dev = [i for i, r in enumerate(rows) if r.system == system and r.split == "dev"
               and r.labels]
        y = np.zeros((len(train), len(cols)), dtype=np.int64)
        train_labels = [system_labels(rows[i], system) or () for i in train]
        for n, lab in enumerate(_label_columns(train_labels, cols)):
            y[n, lab] = 1
        sample_weight = (balanced_weights([rows[i].source for i in train])
                         if system in BALANCED_SYSTEMS else None)
        best = (-1.0, C_GRID[0], weights[cols], bias[cols])
        for c in C_GRID:
            w, b = _fit_system(x[train], y, c, settings.seed, sample_weight)
            dev_scores = x[dev] @ w.T + b
            score = float(recall_at_k(dev_scores, _label_columns([rows[i].labels for i in dev],
                                                                 cols), k).mean())
            if score > best[0]:
                best = (score, c, w, b)
        chosen[system] = best[1]
        weights[cols], bias[cols] = best[2], best[3]
    a, b0 = _similarity_calibration(rows, x, proto, settings.seed)
    gate, gate_card = fit_gate(rows, x, settings)
    heldout = evaluate(rows, x, weights, bias, proto, settings)
    heldout["gate"] = evaluate_gate(rows, x, gate, gate_card["threshold"], settings)
    card: dict[str, Any] = {
        "model": "a gate and logistic heads on frozen all-MiniLM-L6-v2 prompt embeddings "
                 "(384-d, int8 ONNX graph: vilmo.embedder.Int8Embedder)",
        "objective": "binary cross-entropy per value, L2 (sklearn lbfgs), C per system on dev; "
                     "gate: class- and source-balanced binary cross-entropy, threshold on dev",
        "chosen_C": chosen, "similarity_calibration": {"a": a, "b": b0},
        "learned_systems": list(LABELLED_SYSTEMS),
        "harm_foundations": {k: list(v) for k, v in HARM_FOUNDATIONS.items()},
        "valueeval_to_schwartz": VALUEEVAL_TO_SCHWARTZ,
        "gate": gate_card,
        "licence": "non-commercial (CC BY-NC 4.0): the safety and foundation heads and the gate "
                   "are trained on PKU-SafeRLHF prompts; ValueEval (Schwartz heads) is CC BY-SA "
                   "4.0; FULCRA, HH helpful and the project's own prompts are MIT",
        "seed": settings.seed, "train_prompts": sum(r.split == "train" for r in rows),
        "heldout": heldout, "train_seconds": round(time.time() - started, 1),
    }
    model = StakesModel(tuple(ids), weights, bias, card, gate)
    model.save(out, card)
    return card


def _similarity_calibration(rows: Sequence[LabelledPrompt], x: Matrix, proto: Matrix,
                            seed: int) -> tuple[float, float]:
    """(a, b) of P(at stake) = sigmoid(a · cos + b), pooled over the labelled systems."""
    from sklearn.linear_model import LogisticRegression

    feats: list[float] = []
    target: list[int] = []
    ids = list(VALUES)
    rng = np.random.default_rng(seed)
    train = [i for i, r in enumerate(rows) if r.split == "train" and r.system in
             ("safety", "schwartz")]
    for i in rng.choice(train, size=min(4000, len(train)), replace=False):
        cols = _columns(str(rows[i].system))
        sims = proto[cols] @ x[i]
        feats += sims.tolist()
        target += [int(ids[c] in rows[i].labels) for c in cols]
    model = LogisticRegression(max_iter=1000).fit(np.array(feats)[:, None], np.array(target))
    return float(model.coef_[0][0]), float(model.intercept_[0])


def evaluate(rows: Sequence[LabelledPrompt], x: Matrix, weights: Matrix, bias: np.ndarray,
             proto: Matrix, settings: StakesSettings) -> dict[str, Any]:
    """Held-out recall@k, learned vs plain similarity, per source and pooled, with 95 % CIs."""
    learned_all: list[np.ndarray] = []
    plain_all: list[np.ndarray] = []
    report: dict[str, Any] = {"metric": f"recall@{settings.k} (foundations: recall@1)",
                              "ci": "95% bootstrap "
                              f"percentile, {settings.bootstrap_rounds} resamples of prompts"}
    for source in SOURCES:
        idx = [i for i, r in enumerate(rows) if r.source == source and r.split == "heldout"
               and r.labels]
        system = str(rows[idx[0]].system)
        cols = _columns(system)
        k = K_BY_SYSTEM.get(system, settings.k)
        labels = _label_columns([rows[i].labels for i in idx], cols)
        learned = recall_at_k(x[idx] @ weights[cols].T + bias[cols], labels, k)
        plain = recall_at_k(x[idx] @ proto[cols].T, labels, k)
        report[source] = _summary(learned, plain, settings)
        report[source]["label_frequency"] = round(float(recall_at_k(
            np.tile(_frequency(rows, source, cols), (len(idx), 1)), labels, k).mean()), 4)
        report[source]["system"] = system
        report[source]["k"] = k
        learned_all.append(learned)
        plain_all.append(plain)
    report["pooled"] = _summary(np.concatenate(learned_all), np.concatenate(plain_all), settings)
    report["everyday"] = _everyday(rows, x, weights, bias)
    return report


def _everyday(rows: Sequence[LabelledPrompt], x: Matrix, weights: Matrix,
              bias: np.ndarray) -> dict[str, Any]:
    """How value-laden held-out everyday prompts (HH helpful) look, against SafeRLHF's held-out
    harmful questions: the mean of the highest safety and Schwartz probabilities."""
    out: dict[str, Any] = {}
    for name, source in (("hh_heldout", BENIGN), ("everyday_heldout", EVERYDAY),
                         ("saferlhf_heldout", "saferlhf")):
        idx = [i for i, r in enumerate(rows) if r.source == source and r.split == "heldout"]
        probs = 1.0 / (1.0 + np.exp(-(x[idx] @ weights.T + bias)))
        out[name] = {"prompts": len(idx)}
        for system in LABELLED_SYSTEMS:
            top = probs[:, _columns(system)].max(axis=1)
            out[name][f"max_{system}_mean"] = round(float(top.mean()), 4)
            out[name][f"max_{system}_over_0.5"] = round(float((top >= 0.5).mean()), 4)
    return out


def _frequency(rows: Sequence[LabelledPrompt], source: str, cols: list[int]) -> np.ndarray:
    """How often each value is labelled in the source's training prompts (a constant ranking:
    the floor any prompt-aware ranking must clear)."""
    ids = [list(VALUES)[c] for c in cols]
    counts = np.zeros(len(cols))
    for r in rows:
        if r.source == source and r.split == "train":
            counts += [v in r.labels for v in ids]
    return counts


def _summary(learned: np.ndarray, plain: np.ndarray, settings: StakesSettings) -> dict[str, Any]:
    n = len(learned)
    rounds, seed = settings.bootstrap_rounds, settings.seed

    def ci(values: np.ndarray) -> list[float]:
        low, high = bootstrap_ci(lambda ix: float(values[ix].mean()), n, rounds, seed)
        return [round(low, 4), round(high, 4)]

    return {"prompts": n,
            "learned": round(float(learned.mean()), 4), "learned_ci": ci(learned),
            "plain_similarity": round(float(plain.mean()), 4), "plain_ci": ci(plain),
            "difference": round(float((learned - plain).mean()), 4),
            "difference_ci": ci(learned - plain)}
