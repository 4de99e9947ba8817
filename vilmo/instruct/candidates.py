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
import numpy.typing as npt

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


@dataclass(frozen=True, slots=True, eq=False)
class PolicyPool:
    """What ranking a policy's principles needs that depends on the policy alone, worked out
    once per policy object (not per request): its principles, their weights, each one's column
    in the values-at-stake heads, and its values that can be judged at stake."""

    principles: list[Principle]
    texts: tuple[str, ...]
    weights: Vector
    """Each principle's weight in the policy (float32, as ranking has always used)."""
    weight_list: list[float]
    columns: npt.NDArray[np.intp]
    """Each principle's column in the heads' probabilities (0 where it has none)."""
    tied: npt.NDArray[np.bool_]
    """Whether the principle's value has a column (else the similarity prior stands in)."""
    untied: tuple[int, ...]
    value_columns: tuple[tuple[str, int], ...]
    """The policy's values with weight > 0 and a column, in the policy's order."""

    @classmethod
    def of(cls, bank: PrincipleBank, stakes: StakesModel, policy: Policy) -> PolicyPool:
        principles = bank.for_policy(policy)
        weights = np.array([p.weight_in(policy) for p in principles], dtype=np.float32)
        found = [stakes.index(p.value) for p in principles]
        return cls(principles, tuple(p.text for p in principles), weights, weights.tolist(),
                   np.array([c if c is not None else 0 for c in found], dtype=np.intp),
                   np.array([c is not None for c in found], dtype=bool),
                   tuple(i for i, c in enumerate(found) if c is None),
                   tuple((value, col) for value in policy.values
                         if policy.weight_of(value) > 0.0
                         and (col := stakes.index(value)) is not None))


class Retriever:
    """Ranks a policy's principles for a prompt; principle embeddings are computed once."""

    def __init__(self, bank: PrincipleBank, encoder: TextEncoder, stakes: StakesModel) -> None:
        self.bank = bank
        self.encoder = encoder
        self.stakes = stakes
        self._matrices: dict[tuple[str, ...], Matrix] = {}
        self._pools: dict[int, tuple[Policy, PolicyPool]] = {}
        self._lock = threading.Lock()

    def pool(self, policy: Policy) -> PolicyPool:
        """The policy's ``PolicyPool``, kept per policy object (policies are frozen; an edited
        policy is a new object), so a request does no per-principle Python work for it."""
        found = self._pools.get(id(policy))
        if found is not None and found[0] is policy:
            return found[1]
        made = PolicyPool.of(self.bank, self.stakes, policy)
        with self._lock:
            if len(self._pools) > 1024:
                self._pools.clear()
            self._pools[id(policy)] = (policy, made)
        return made

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
        ranked = sorted(((float(probs[col]), value)
                         for value, col in self.pool(policy).value_columns), reverse=True)
        if not ranked:
            return ()
        floor = min(VALUE_FLOOR, RELATIVE_FLOOR * ranked[0][0])
        return tuple(value for p, value in ranked if p >= floor)

    def retrieve(self, prompt: str, policy: Policy, principles: int,
                 styles: tuple[str, ...] = STYLES, only: tuple[str, ...] | None = None,
                 vector: Vector | None = None, probs: Vector | None = None,
                 first: str | None = None) -> CandidateSet:
        """The ``principles`` most relevant principles (at most MAX_PER_VALUE per value), each in
        every style of ``styles``, most relevant first. With ``only``, principles of those values
        (and custom principles tied to no value that look at stake) only. ``first``: the id of
        a principle taken first where the policy has it (a distress disclosure's care)."""
        plan = self.pool(policy)
        pool = plan.principles
        if vector is None:
            vector = self.embed(prompt)
        if probs is None:
            probs = self.stakes.probabilities(vector)
        if not pool:
            return CandidateSet(vector, probs, (), np.zeros((0, len(vector)), dtype=np.float32))
        matrix = self._matrix_of(plan.texts)
        similarity = matrix @ vector
        at_stake = self._stakes(plan, probs, similarity)
        relevance = at_stake * plan.weights * (1.0 + similarity)
        relevances, similarities = relevance.tolist(), similarity.tolist()
        stake_list, weights = at_stake.tolist(), plan.weight_list
        chosen: list[Candidate] = []
        per_value: dict[str | None, int] = {}
        wanted = principles * len(styles)
        order = np.argsort(-relevance, kind="stable").tolist()
        if first is not None:
            order.sort(key=lambda i: pool[i].id != first)
        for i in order:
            p = pool[i]
            if weights[i] <= 0.0 or per_value.get(p.value, 0) >= MAX_PER_VALUE:
                continue
            if only is not None and (p.value not in only if p.value
                                     else stake_list[i] < VALUE_FLOOR):
                continue
            per_value[p.value] = per_value.get(p.value, 0) + 1
            chosen += [Candidate(p, style, relevances[i], similarities[i], stake_list[i],
                                 weights[i], i)
                       for style in styles]
            if len(chosen) >= wanted:
                break
        return CandidateSet(vector, probs, tuple(chosen), matrix)

    def _stakes(self, plan: PolicyPool, probs: Vector, similarity: Vector,
                ) -> npt.NDArray[np.float64]:
        """P(at stake) per principle (float64): its value's head, or for a principle tied to
        no value the calibrated similarity prior."""
        at_stake = np.where(plan.tied, probs[plan.columns], 0.0).astype(np.float64)
        for i in plan.untied:
            at_stake[i] = self.stakes.similarity_prior(float(similarity[i]))
        return at_stake

    def has_matrix(self, principles: list[Principle]) -> bool:
        """Whether these principles' embeddings are cached (``matrix`` needs no model)."""
        return self.has_texts(tuple(p.text for p in principles))

    def has_texts(self, texts: tuple[str, ...]) -> bool:
        """Whether these principle texts' embeddings are cached."""
        with self._lock:
            return texts in self._matrices

    def matrix(self, principles: list[Principle]) -> Matrix:
        """Embeddings of these principles' texts (cached per distinct list)."""
        return self._matrix_of(tuple(p.text for p in principles))

    def _matrix_of(self, texts: tuple[str, ...]) -> Matrix:
        with self._lock:
            found = self._matrices.get(texts)
        if found is None:
            found = self.encoder.encode(list(texts))
            with self._lock:
                self._matrices[texts] = found
        return found
