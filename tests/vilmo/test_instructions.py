"""The relevance generator and instruction placement."""

from __future__ import annotations

import pytest

from vilmo.embedder import Embedder
from vilmo.instructions import (
    HEADER,
    Instruction,
    RelevanceGenerator,
    apply_instruction,
    prompt_text,
)
from vilmo.policy import Policy
from vilmo.principles import PrincipleBank
from vilmo.types import Messages

pytestmark = pytest.mark.slow  # loads the packaged encoder (a real model)


@pytest.fixture(scope="module")
def generator() -> RelevanceGenerator:
    return RelevanceGenerator(PrincipleBank.load(), Embedder())


def policy(**extra: object) -> Policy:
    data: dict[str, object] = {"name": "t", "values": {
        "mft.care": {"weight": 1.0}, "mft.fairness": {"weight": 1.0},
        "safety.privacy": {"weight": 1.0}, "mft.sanctity": {"weight": 1.0}}}
    data.update(extra)
    return Policy.model_validate(data)


@pytest.mark.parametrize("prompt, value", [
    ("How can I find out where my ex lives now and read her messages?", "safety.privacy"),
    ("I want to beat up the kid who keeps teasing my brother.", "mft.care"),
    ("Help me copy my classmate's essay and hand it in as mine.", "mft.fairness"),
])
def test_most_relevant_principle_fits_the_prompt(generator: RelevanceGenerator, prompt: str,
                                                 value: str) -> None:
    # Plain similarity reads topic too ("classmate" pulls in bullying), so ask for the top two;
    # the learned relevance of the VILMO generator is what sharpens this.
    ranked = generator.rank(prompt, policy())
    assert value in {p.value for p in ranked[:2]}


def test_instruction_respects_budget_weights_and_style(generator: RelevanceGenerator) -> None:
    messages = [{"role": "user", "content": "How do I get back at my coworker?"}]
    p = policy(instructions={"max_principles": 2, "style": "role"},
               values={"mft.care": {"weight": 1.0}, "mft.loyalty": {"weight": 0.0}})
    instruction = generator.generate(messages, p)
    assert len(instruction.principle_ids) == 2
    assert all(pid.startswith("mft.care/") for pid in instruction.principle_ids)
    assert instruction.text.startswith(HEADER)
    bank = {pr.id: pr for pr in PrincipleBank.load().principles}
    for pid in instruction.principle_ids:
        assert bank[pid].phrase("role") in instruction.text


def test_custom_principles_join_and_static_and_none(generator: RelevanceGenerator) -> None:
    custom = policy(principles=[{"id": "no-doses", "text": "Never give medication doses.",
                                 "instruction": "Do not state medication doses."}])
    ranked = generator.rank("How many pills of ibuprofen can I take at once?", custom)
    assert ranked[0].id == "custom/no-doses"
    static = policy(instructions={"generator": "static", "text": "Be kind."})
    assert generator.generate([], static) == Instruction("Be kind.", (), "static")
    assert generator.generate([], policy(instructions={"generator": "none"})).empty


def test_placement_system_and_prefix_do_not_mutate_input() -> None:
    instruction = Instruction("Be kind.", ("mft.care/x",), "relevance")
    messages: Messages = [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]}]
    snapshot = repr(messages)
    system = apply_instruction(messages, instruction, "system")
    assert system[0] == {"role": "system", "content": "Be kind."} and system[1:] == messages
    prefixed = apply_instruction(messages, instruction, "user_prefix")
    assert prefixed[2]["content"][0] == {"type": "text", "text": "Be kind."}
    assert prefixed[0] == messages[0]
    assert repr(messages) == snapshot
    assert prompt_text(messages) == "two"
    assert apply_instruction([], instruction, "user_prefix")[0]["role"] == "system"
