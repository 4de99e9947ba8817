"""Value instructions: what to tell the model before it answers, and where to put it.

``InstructionGenerator`` is the seam: prompt messages and a policy in, an ``Instruction`` (text
and the ids of the principles it used) out. ``RelevanceGenerator`` composes the instruction
from the policy's principles ranked by weight × similarity to the prompt; the learned VILMO
generator drops in behind the same interface. ``apply_instruction`` places it in the messages.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from vilmo.embedder import TextEncoder
from vilmo.policy import Policy
from vilmo.principles import Principle, PrincipleBank
from vilmo.types import ChatMessage, Matrix, Messages
from vilmo.values import VALUES

Placement = Literal["system", "user_prefix"]
MAX_PER_VALUE = 2  # keeps one value from crowding out the others in a short instruction
HEADER = "Follow these values in your reply:"


@dataclass(frozen=True, slots=True)
class Instruction:
    """A value instruction and the principles it was built from."""

    text: str
    principle_ids: tuple[str, ...] = ()
    generator: str = "none"

    @property
    def empty(self) -> bool:
        return not self.text


NO_INSTRUCTION = Instruction("")


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
    """A stronger instruction after a reply went against ``violated`` ids: it names those
    values and adds the reasoned phrasing of their principles before the first instruction."""
    chosen: list[Principle] = []
    for value_id in violated:
        chosen += [p for p in bank.for_policy(policy)
                   if p.value == value_id or p.id == value_id][:per_value]
    names = [VALUES[v].name if v in VALUES else v for v in violated]
    lines = [(f"Important: a draft reply to this request went against {', '.join(names)}. "
              "Write a reply that fully respects these values:")]
    lines += [f"- {p.phrase('reasoned')}" for p in chosen]
    if instruction.text:
        lines.append(instruction.text)
    ids = tuple(dict.fromkeys([*instruction.principle_ids, *(p.id for p in chosen)]))
    return Instruction("\n".join(lines), ids, f"{instruction.generator}+regenerate")


def apply_instruction(messages: Messages, instruction: Instruction,
                      placement: Placement) -> Messages:
    """A copy of the messages with the instruction placed; the input is never modified."""
    if instruction.empty:
        return messages
    if placement == "system":
        return [{"role": "system", "content": instruction.text}, *messages]
    placed = copy.deepcopy(messages)
    for message in reversed(placed):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                message["content"] = [{"type": "text", "text": instruction.text}, *content]
            else:
                message["content"] = f"{instruction.text}\n\n{content or ''}"
            return placed
    # No user turn to prefix: fall back to a system message rather than dropping it.
    return [{"role": "system", "content": instruction.text}, *messages]
