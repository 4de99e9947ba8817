"""A simulated target for the VILMO learner: each prompt's violation rate depends, in a known
way, on a hidden property of the prompt and on the candidate instruction it gets."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from vilmo.classifier import ScoreInput, ValueScores
from vilmo.instructions import prompt_text
from vilmo.principles import STYLES, Principle, PrincipleBank
from vilmo.target import Costs
from vilmo.types import Matrix, Messages

DIMS = 384
VALUES3 = ("mft.care", "mft.fairness", "safety.privacy")
GROUPS = 4


def unit(v: np.ndarray) -> np.ndarray:
    normed: np.ndarray = (v / np.linalg.norm(v)).astype(np.float32)
    return normed


def seeded_vector(text: str) -> np.ndarray:
    seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
    return unit(np.random.default_rng(seed).standard_normal(DIMS))


class TableEncoder:
    """Known vectors for registered texts, a fixed random unit vector for any other text."""

    def __init__(self) -> None:
        self.table: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> Matrix:
        rows = [self.table.get(t, seeded_vector(t)) for t in texts]
        return np.stack(rows) if rows else np.zeros((0, DIMS), dtype=np.float32)


def small_bank() -> PrincipleBank:
    """Two principles for each of three values, each phrased in all three styles."""
    return PrincipleBank([
        Principle(f"{v}/p{j}", v, f"principle {j} of {v}",
                  MappingProxyType({s: f"[{v}/p{j} {s}] be good" for s in STYLES}))
        for v in VALUES3 for j in range(2)])


@dataclass
class World:
    """The hidden truth: per group, the best value, principle and style."""

    seed: int = 7
    encoder: TableEncoder = field(default_factory=TableEncoder)
    group_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.centroids = [unit(rng.standard_normal(DIMS)) for _ in range(GROUPS)]
        self.best_value = [VALUES3[(g + 1) % 3] for g in range(GROUPS)]
        self.best_principle = [g % 2 for g in range(GROUPS)]
        self.best_style = [STYLES[(g * 2 + 1) % 3] for g in range(GROUPS)]
        self._rng = np.random.default_rng(self.seed + 1)

    def prompts(self, n_per_group: int, tag: str) -> list[str]:
        out = []
        for g in range(GROUPS):
            for i in range(n_per_group):
                text = f"{tag} prompt {i} about topic {g}"
                noise = unit(self._rng.standard_normal(DIMS))
                self.encoder.table[text] = unit(self.centroids[g] + 0.7 * noise)
                self.group_of[text] = g
                out.append(text)
        return out

    def rate(self, prompt: str, principle_id: str, style: str) -> float:
        g = self.group_of[prompt]
        value, j = principle_id.rsplit("/p", 1)
        good_value = value == self.best_value[g]
        return (0.75 - 0.35 * good_value - 0.2 * (style == self.best_style[g])
                - 0.12 * (good_value and int(j) == self.best_principle[g]))

    def best(self, prompt: str) -> tuple[str, str]:
        g = self.group_of[prompt]
        return f"{self.best_value[g]}/p{self.best_principle[g]}", self.best_style[g]


def parse_line(instruction: str) -> tuple[str, str] | None:
    """(principle id, style) of the first candidate line in an instruction text."""
    start = instruction.find("[")
    if start < 0:
        return None
    pid, style = instruction[start + 1: instruction.index("]", start)].split(" ")
    return pid, style


class SimulatedTarget:
    """Sampler: each reply is 'VIOLATION' with the world's rate for (prompt, instruction)."""

    def __init__(self, world: World, seed: int = 11) -> None:
        self.world = world
        self.costs = Costs()
        self._rng = random.Random(seed)

    async def sample(self, messages: Messages, k: int) -> list[str]:
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        parsed = parse_line(system)
        rate = self.world.rate(prompt_text(messages), *parsed) if parsed else 0.9
        self.costs.calls += k
        return ["VIOLATION" if self._rng.random() < rate else "OK" for _ in range(k)]


class ReplyReader:
    """A classifier that reads the simulated reply: 1.0 for 'VIOLATION' on every value."""

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        return [ValueScores({v: 1.0 if "VIOLATION" in it.response else 0.0 for v in value_ids})
                for it in items]


class FlakyClassifier:
    """Scores a reply by its length; raises on call number ``fail_at`` (a crash mid-run)."""

    fail_at: int | None = None
    calls = 0

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        FlakyClassifier.calls += 1
        if FlakyClassifier.fail_at is not None and FlakyClassifier.calls >= FlakyClassifier.fail_at:
            raise RuntimeError("simulated crash while scoring")
        return [ValueScores({v: min(1.0, len(it.response) / 200) for v in value_ids})
                for it in items]


def flaky_classifier(policy: object, encoder: object) -> FlakyClassifier:
    """The ``--classifier generator_fakes:flaky_classifier`` factory."""
    return FlakyClassifier()
