"""Candidate instructions for a prompt: the policy's principles most relevant to it, in each style.

Relevance = P(the principle's value is at stake | prompt) × policy weight × (1 + cos(prompt,
principle)). The stakes probability comes from ``vilmo.instruct.stakes``; a custom principle tied to
no value takes the stakes model's calibrated similarity instead. Both the VILMO generator (at
request time) and its training loop draw candidates here, so they see the same set. The
generator first asks ``values_at_stake`` which of the policy's values a prompt puts at stake and
draws candidates from their principles only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from vilmo.instruct.instructions import MAX_PER_VALUE
from vilmo.instruct.principles import STYLES, Principle, PrincipleBank
from vilmo.instruct.stakes import StakesModel, Vector
from vilmo.judge.embedder import TextEncoder
from vilmo.policy import Policy
from vilmo.types import Matrix

VALUE_FLOOR = 0.5
"""A policy value is judged at stake when its head's probability reaches this, or reaches
``RELATIVE_FLOOR`` of the most probable value's (which always is, once the gate has passed)."""
RELATIVE_FLOOR = 0.5


@dataclass(frozen=True, slots=True)
class Candidate:
    """One principle in one style, with what the scorer needs to know about it."""

    principle: Principle
    style: str
    relevance: float
    similarity: float
    stakes: float
    weight: float
    row: int
    """Row of the principle in the candidate set's embedding matrix."""

    @property
    def key(self) -> str:
        return f"{self.principle.id}#{self.style}"

    @property
    def text(self) -> str:
        return self.principle.phrase(self.style)


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """A prompt's candidates with the embeddings they were ranked by."""

    prompt_vector: Vector
    stakes: Vector
    candidates: tuple[Candidate, ...]
    principle_vectors: Matrix


class Retriever:
    """Ranks a policy's principles for a prompt; principle embeddings are computed once."""

    def __init__(self, bank: PrincipleBank, encoder: TextEncoder, stakes: StakesModel) -> None:
        self.bank = bank
        self.encoder = encoder
        self.stakes = stakes
        self._matrices: dict[tuple[str, ...], Matrix] = {}
        self._lock = threading.Lock()

    def embed(self, prompt: str) -> Vector:
        """The prompt's embedding (zeros for a blank prompt)."""
        if prompt.strip():
            vector: Vector = self.encoder.encode([prompt])[0]
            return vector
        return np.zeros(self.stakes.weights.shape[1], dtype=np.float32)

    def values_at_stake(self, vector: Vector, policy: Policy,
                        probs: Vector | None = None) -> tuple[str, ...]:
        """The policy's values (weight > 0) whose probability reaches ``VALUE_FLOOR`` or half
        the most probable one's, most probable first (so at least the most probable one).
        ``probs``: the values' probabilities when another model read the prompt (the reader)."""
        if probs is None:
            probs = self.stakes.probabilities(vector)
        ranked = sorted(((float(probs[col]), value) for value in policy.values
                         if policy.weight_of(value) > 0.0
                         and (col := self.stakes.index(value)) is not None), reverse=True)
        if not ranked:
            return ()
        floor = min(VALUE_FLOOR, RELATIVE_FLOOR * ranked[0][0])
        return tuple(value for p, value in ranked if p >= floor)

    def retrieve(self, prompt: str, policy: Policy, principles: int,
                 styles: tuple[str, ...] = STYLES, only: tuple[str, ...] | None = None,
                 vector: Vector | None = None, probs: Vector | None = None) -> CandidateSet:
        """The ``principles`` most relevant principles (at most MAX_PER_VALUE per value), each in
        every style of ``styles``, most relevant first. With ``only``, principles of those values
        (and custom principles tied to no value that look at stake) only."""
        pool = self.bank.for_policy(policy)
        if vector is None:
            vector = self.embed(prompt)
        if probs is None:
            probs = self.stakes.probabilities(vector)
        if not pool:
            return CandidateSet(vector, probs, (), np.zeros((0, len(vector)), dtype=np.float32))
        matrix = self.matrix(pool)
        similarity = matrix @ vector
        weights = np.array([p.weight_in(policy) for p in pool], dtype=np.float32)
        at_stake = np.array([self._stake(p, probs, float(s)) for p, s in zip(pool, similarity,
                                                                              strict=True)])
        relevance = at_stake * weights * (1.0 + similarity)
        chosen: list[Candidate] = []
        per_value: dict[str | None, int] = {}
        for i in np.argsort(-relevance, kind="stable"):
            p = pool[int(i)]
            if weights[i] <= 0.0 or per_value.get(p.value, 0) >= MAX_PER_VALUE:
                continue
            if only is not None and (p.value not in only if p.value
                                     else at_stake[i] < VALUE_FLOOR):
                continue
            per_value[p.value] = per_value.get(p.value, 0) + 1
            chosen += [Candidate(p, style, float(relevance[i]), float(similarity[i]),
                                 float(at_stake[i]), float(weights[i]), int(i))
                       for style in styles]
            if len(chosen) >= principles * len(styles):
                break
        return CandidateSet(vector, probs, tuple(chosen), matrix)

    def _stake(self, principle: Principle, probs: Vector, similarity: float) -> float:
        column = self.stakes.index(principle.value)
        if column is not None:
            return float(probs[column])
        return self.stakes.similarity_prior(similarity)

    def has_matrix(self, principles: list[Principle]) -> bool:
        """Whether these principles' embeddings are cached (``matrix`` needs no model)."""
        with self._lock:
            return tuple(p.text for p in principles) in self._matrices

    def matrix(self, principles: list[Principle]) -> Matrix:
        """Embeddings of these principles' texts (cached per distinct list)."""
        texts = tuple(p.text for p in principles)
        with self._lock:
            found = self._matrices.get(texts)
        if found is None:
            found = self.encoder.encode(list(texts))
            with self._lock:
                self._matrices[texts] = found
        return found
