"""Fit the per-target instruction scorer (``vilmo.instruct.scorer``) on a run's records.

Objective: binomial cross-entropy between the predicted violation rate of (prompt, candidate)
and the observed one (the mean over its K replies of the largest policy-weighted violation
probability the classifier gave), each pair weighted by K, with an L2 penalty (sklearn
LogisticRegression, lbfgs) whose strength is chosen by 3-fold cross-validation grouped by prompt.
Soft targets are fitted exactly by giving each pair a positive row of weight K·rate and a
negative row of weight K·(1 - rate).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vilmo.instruct.candidates import CandidateSet, Retriever
from vilmo.instruct.scorer import N_EXTRA, InstructionScorer, Projection, design
from vilmo.policy import Policy
from vilmo.train.generator import Record, reply_violation
from vilmo.types import Matrix

log = logging.getLogger(__name__)
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
PROMPT_DIMS = 16
PRINCIPLE_DIMS = 8


@dataclass(frozen=True, slots=True)
class Observed:
    """One prompt's recorded candidates with their observed violation rates."""

    candidates: CandidateSet
    rates: np.ndarray
    replies: np.ndarray


def observations(records: Iterable[Record], policy: Policy,
                 retriever: Retriever) -> list[Observed]:
    """Group records by prompt and rebuild each prompt's candidate set (features) for them."""
    by_prompt: dict[str, dict[str, Record]] = defaultdict(dict)
    for r in records:
        by_prompt[r.prompt][r.candidate] = r
    pool = len(retriever.bank.for_policy(policy))
    out = []
    for prompt, recorded in by_prompt.items():
        cs = retriever.retrieve(prompt, policy, pool)
        kept = [c for c in cs.candidates if c.key in recorded]
        if len(kept) < len(recorded):
            log.warning("%d recorded candidates of a prompt are no longer in the policy",
                        len(recorded) - len(kept))
        if not kept:
            continue
        rates = [np.mean([reply_violation(s, policy) for s in recorded[c.key].scores] or [0.0])
                 for c in kept]
        counts = [len(recorded[c.key].scores) for c in kept]
        out.append(Observed(CandidateSet(cs.prompt_vector, cs.stakes, tuple(kept),
                                         cs.principle_vectors), np.array(rates), np.array(counts)))
    return out


def _table(data: list[Observed], pp: Projection,
           cp: Projection) -> tuple[Matrix, np.ndarray, np.ndarray, np.ndarray]:
    x = np.concatenate([design(o.candidates, pp, cp) for o in data])
    rates = np.concatenate([o.rates for o in data])
    counts = np.concatenate([o.replies for o in data]).astype(np.float64)
    groups = np.concatenate([np.full(len(o.rates), i) for i, o in enumerate(data)])
    return x, rates, counts, groups


def _fit(x: Matrix, rates: np.ndarray, counts: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    xx = np.concatenate([x, x])
    yy = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    ww = np.concatenate([counts * rates, counts * (1.0 - rates)]) + 1e-9
    return LogisticRegression(C=c, max_iter=3000).fit(xx, yy, sample_weight=ww)


def _log_loss(model: Any, x: Matrix, rates: np.ndarray, counts: np.ndarray) -> float:
    p = np.clip(model.predict_proba(x)[:, 1], 1e-6, 1 - 1e-6)
    loss = -(rates * np.log(p) + (1 - rates) * np.log(1 - p))
    return float((loss * counts).sum() / counts.sum())


def fit_scorer(records: Iterable[Record], policy: Policy, retriever: Retriever,
               card: dict[str, Any] | None = None, seed: int = 13) -> InstructionScorer:
    """The scorer fitted on these records (C by grouped CV when there are 6+ prompts)."""
    from threadpoolctl import threadpool_limits

    # Small problems: BLAS threads only fight each other (and the server) on a few cores.
    with threadpool_limits(1):
        return _fit_scorer(list(records), policy, retriever, card or {}, seed)


def _fit_scorer(records: list[Record], policy: Policy, retriever: Retriever,
                card: dict[str, Any], seed: int) -> InstructionScorer:
    started = time.time()
    data = observations(records, policy, retriever)
    if not data:
        raise ValueError("no records to fit the scorer on")
    pp = Projection.fit(np.stack([o.candidates.prompt_vector for o in data]), PROMPT_DIMS)
    cp = Projection.fit(retriever.matrix(retriever.bank.for_policy(policy)), PRINCIPLE_DIMS)
    x, rates, counts, groups = _table(data, pp, cp)
    cv: dict[str, float] = {}
    if len(data) >= 6:
        folds = np.random.default_rng(seed).permutation(len(data)) % 3
        for c in C_GRID:
            losses = []
            for f in range(3):
                test = np.isin(groups, np.flatnonzero(folds == f))
                model = _fit(x[~test], rates[~test], counts[~test], c)
                losses.append(_log_loss(model, x[test], rates[test], counts[test]))
            cv[str(c)] = float(np.mean(losses))
        best_c = float(min(cv, key=lambda k: cv[k]))
    else:
        best_c = 0.1
    model = _fit(x, rates, counts, best_c)
    coef = model.coef_[0].astype(np.float32)
    n_p = 1 + len(data[0].candidates.stakes) + pp.basis.shape[1]
    n_c = (len(coef) - N_EXTRA) // n_p
    mean_rate = float((rates * counts).sum() / counts.sum())
    info = {
        **card,
        "model": "logistic regression on outer(prompt features, candidate features) + 4 main "
                 "effects; prompt features = [1, stakes probabilities, whitened PCA-"
                 f"{pp.basis.shape[1]} of the MiniLM prompt embedding]; candidate features = "
                 "[1, value one-hot, style one-hot, whitened PCA-"
                 f"{cp.basis.shape[1]} of the principle embedding]",
        "objective": "K-weighted binomial cross-entropy to the observed violation rate "
                     "(mean over replies of max policy-weighted classifier violation), L2",
        "C": best_c, "cv_log_loss_by_C": cv,
        "constant_log_loss": round(float(-(mean_rate * np.log(max(mean_rate, 1e-6)) + (
            1 - mean_rate) * np.log(max(1 - mean_rate, 1e-6)))), 5),
        "prompts": len(data), "pairs": len(rates), "replies": int(counts.sum()),
        "mean_violation_rate": round(mean_rate, 4), "seed": seed,
        "fit_seconds": round(time.time() - started, 1),
    }
    return InstructionScorer(coef[: n_p * n_c].reshape(n_p, n_c), coef[n_p * n_c:],
                             float(model.intercept_[0]), pp, cp, info)
