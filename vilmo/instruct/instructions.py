"""Value instructions: what to tell the model before it answers, and where to put it.

``InstructionGenerator`` is the seam: prompt messages and a policy in, an ``Instruction`` (text,
the ids of the principles it used, the values judged at stake) out. ``RelevanceGenerator``
composes the instruction from the policy's principles ranked by weight × similarity to the
prompt, whatever the prompt; the stake-aware VILMO generator (``vilmo.instruct.generator``) drops in
behind the same interface. ``apply_instruction`` places it in the messages (merged into the
client's system message, or before the last user turn); ``strengthen`` makes it stronger for a
regeneration.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from vilmo.instruct.principles import Principle, PrincipleBank
from vilmo.judge.embedder import TextEncoder
from vilmo.policy import Policy
from vilmo.types import ChatMessage, Matrix, Messages
from vilmo.values import VALUES

Placement = Literal["system", "user_prefix"]
MAX_PER_VALUE = 2  # keeps one value from crowding out the others in a short instruction
HEADER = "Follow these values in your reply:"
STRENGTHEN_LEAD = "Important: a draft reply to this request went against"
SYSTEM_ROLES = ("system", "developer")
"""Roles whose message the instruction is merged into (the first one found)."""


@dataclass(frozen=True, slots=True)
class Instruction:
    """A value instruction and the principles it was built from."""

    text: str
    principle_ids: tuple[str, ...] = ()
    generator: str = "none"
    stakes: tuple[str, ...] = ()
    """The values judged at stake, most at stake first (stake-aware generators only)."""
    violated: tuple[str, ...] = ()
    """Values a rejected draft went against (after ``strengthen``)."""

    @property
    def empty(self) -> bool:
        return not self.text


NO_INSTRUCTION = Instruction("")
MODEL_FREE_GENERATORS = frozenset({"none", "static"})
"""``instructions.generator`` values answered without a model (nothing, or the policy's text):
callers may run them where they are, without handing them to a worker thread."""


class InstructionGenerator(Protocol):
    """Writes the value instruction for one prompt under one policy."""

    def generate(self, messages: Messages, policy: Policy) -> Instruction: ...


def prompt_text(messages: Messages) -> str:
    """The text the instruction should fit: the last user turn (text parts only)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def message_text(message: ChatMessage) -> str:
    """A message's text, whether its content is a string or a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and part.get("type") == "text")
    return ""


class RelevanceGenerator:
    """The policy's principles ranked by weight × cosine similarity to the prompt."""

    name = "relevance"

    def __init__(self, bank: PrincipleBank, encoder: TextEncoder) -> None:
        self.bank = bank
        self.encoder = encoder
        self._matrices: dict[tuple[str, ...], Matrix] = {}

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        settings = policy.instructions
        if settings.generator == "none":
            return NO_INSTRUCTION
        if settings.generator == "static":
            return Instruction(settings.text or "", (), "static")
        chosen = self.rank(prompt_text(messages), policy)[: settings.max_principles]
        return compose(chosen, settings.style, self.name)

    def rank(self, prompt: str, policy: Policy) -> list[Principle]:
        """The policy's principles, most relevant first, at most MAX_PER_VALUE per value."""
        principles = self.bank.for_policy(policy)
        if not principles:
            return []
        weights = np.array([p.weight_in(policy) for p in principles], dtype=np.float32)
        if prompt.strip():
            similarity = self._principle_matrix(principles) @ self.encoder.encode([prompt])[0]
            # Shift cosine into (0, 2] so a weight of zero always ranks last.
            scores = weights * (1.0 + similarity)
        else:
            scores = weights
        ranked: list[Principle] = []
        per_value: dict[str | None, int] = {}
        for i in np.argsort(-scores, kind="stable"):
            principle = principles[int(i)]
            if weights[int(i)] <= 0.0 or per_value.get(principle.value, 0) >= MAX_PER_VALUE:
                continue
            per_value[principle.value] = per_value.get(principle.value, 0) + 1
            ranked.append(principle)
        return ranked

    def _principle_matrix(self, principles: list[Principle]) -> Matrix:
        """Principle embeddings, computed once per distinct set of principle texts."""
        texts = tuple(p.text for p in principles)
        matrix = self._matrices.get(texts)
        if matrix is None:
            matrix = self._matrices[texts] = self.encoder.encode(list(texts))
        return matrix


def compose(principles: list[Principle], style: str, generator: str) -> Instruction:
    """One instruction from chosen principles: a header and one line per principle."""
    if not principles:
        return NO_INSTRUCTION
    lines = [f"- {p.phrase(style)}" for p in principles]
    return Instruction("\n".join([HEADER, *lines]), tuple(p.id for p in principles), generator)


def strengthen(instruction: Instruction, violated: list[str], policy: Policy,
               bank: PrincipleBank, per_value: int = 2) -> Instruction:
    """A stronger instruction after a reply went against ``violated`` ids: one lead line that
    names every value violated so far, the reasoned phrasing of up to ``per_value`` principles
    of each newly violated value that the instruction does not already hold, then the previous
    instruction (without its old lead line). Nothing already in the text is repeated, however
    many times it is strengthened."""
    names_so_far = tuple(dict.fromkeys([*instruction.violated, *violated]))
    kept = [line for line in instruction.text.splitlines()
            if line and not line.startswith(STRENGTHEN_LEAD)]
    present = set(kept)
    ids = list(instruction.principle_ids)
    added: list[str] = []
    pool = bank.for_policy(policy)
    for value_id in violated:
        taken = 0
        for p in pool:
            if taken >= per_value:
                break
            if not (p.value == value_id or p.id == value_id) or p.id in ids:
                continue
            line = f"- {p.phrase('reasoned')}"
            if line in present:
                continue
            present.add(line)
            added.append(line)
            ids.append(p.id)
            taken += 1
    names = [VALUES[v].name if v in VALUES else v for v in names_so_far]
    lead = (f"{STRENGTHEN_LEAD} {', '.join(names)}. "
            "Write a reply that fully respects these values:")
    generator = instruction.generator
    if not generator.endswith("+regenerate"):
        generator += "+regenerate"
    return Instruction("\n".join([lead, *added, *kept]), tuple(ids), generator,
                       instruction.stakes, names_so_far)


def apply_instruction(messages: Messages, instruction: Instruction,
                      placement: Placement) -> Messages:
    """A copy of the messages with the instruction placed; the input is never modified.

    ``system``: merged into the client's first system (or developer) message, the instruction
    first, so the conversation keeps one system message; a new system message only when there
    is none. ``user_prefix``: before the text of the last user turn."""
    if instruction.empty:
        return messages
    placed = copy.deepcopy(messages)
    if placement == "system":
        for message in placed:
            if message.get("role") in SYSTEM_ROLES:
                _prefix(message, instruction.text)
                return placed
        return [{"role": "system", "content": instruction.text}, *placed]
    for message in reversed(placed):
        if message.get("role") == "user":
            _prefix(message, instruction.text)
            return placed
    # No user turn to prefix: fall back to a system message rather than dropping it.
    return [{"role": "system", "content": instruction.text}, *placed]


def _prefix(message: ChatMessage, text: str) -> None:
    """Put ``text`` before a message's own text (string or content parts)."""
    content = message.get("content")
    if isinstance(content, list):
        message["content"] = [{"type": "text", "text": text}, *content]
    elif content:
        message["content"] = f"{text}\n\n{content}"
    else:
        message["content"] = text
