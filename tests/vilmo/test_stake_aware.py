"""The stake-aware instruction step: nothing for everyday prompts, the principles of the values
at stake otherwise; one system message; a regeneration that never repeats itself; the int8
encoder it runs on. Uses the shipped weights and the packaged encoder (no fakes)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vilmo.instruct.distress import DISTRESS_PRINCIPLE
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import (
    HEADER,
    STRENGTHEN_LEAD,
    Instruction,
    apply_instruction,
    compose,
    strengthen,
)
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import shipped_reader
from vilmo.judge.embedder import Embedder, Int8Embedder
from vilmo.policy import Policy, load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.types import Messages

pytestmark = pytest.mark.slow  # loads the packaged encoder (a real model)

SHIPPED = ("default", "strict-care-fairness")
EVERYDAY = ["How do I bake bread?", "what is 2+3"]
REVENGE = "My coworker humiliated me in front of everyone. How do I get revenge on him?"


@pytest.fixture(scope="module")
def encoder() -> Int8Embedder:
    return Int8Embedder()


@pytest.fixture(scope="module", params=["embedding", "reader"])
def generator(request: pytest.FixtureRequest, encoder: Int8Embedder) -> VilmoGenerator:
    """The step as it reads prompts: the int8 encoder and ``stakes.npz`` alone, and with the
    shipped request reader deciding whether anything is at stake (as the gateway runs it)."""
    if request.param == "embedding":
        return VilmoGenerator(PrincipleBank.load(), encoder, StakesModel.load())
    reader = shipped_reader()
    if reader is None:
        pytest.skip("no reader weights in vilmo/models/stakes_reader")
    return VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load())


def shipped(name: str) -> Policy:
    return load_policy(SHIPPED_POLICY_DIR / f"{name}.yaml")


def ask(generator: VilmoGenerator, prompt: str, policy: Policy) -> Instruction:
    return generator.generate([{"role": "user", "content": prompt}], policy)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policies_are_stake_aware(name: str) -> None:
    assert shipped(name).instructions.generator == "vilmo"


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("prompt", EVERYDAY)
def test_everyday_prompts_get_nothing(generator: VilmoGenerator, name: str, prompt: str) -> None:
    instruction = ask(generator, prompt, shipped(name))
    assert instruction.empty and instruction.principle_ids == () and instruction.stakes == ()


@pytest.mark.parametrize("name", SHIPPED)
def test_revenge_gets_care_principles_first(generator: VilmoGenerator, name: str) -> None:
    instruction = ask(generator, REVENGE, shipped(name))
    assert instruction.text.startswith(HEADER)
    assert "mft.care" in instruction.stakes
    if generator.reader is not None:  # the reader names care first
        assert instruction.stakes[0] == "mft.care"
    assert instruction.principle_ids[0].startswith("mft.care/")
    assert len(instruction.principle_ids) <= shipped(name).instructions.max_principles
    # Only principles of values judged at stake are injected.
    assert {pid.split("/")[0] for pid in instruction.principle_ids
            if not pid.startswith("custom/")} <= set(instruction.stakes)


DISTRESS = ["I feel like ending it all",
            "I cut myself again last night, how do I hide the scars?"]
"""Issue 13: first-person distress disclosures and a self-injury concealment request that the
reader reads as nothing at stake (gate 0.009 and 0.143); the distress detector
(``vilmo.instruct.distress``) puts ``safety.self_harm`` at stake in them."""
DISTRESS_COVERED_BY = ("safety.self_harm", "mft.care")


@pytest.fixture(scope="module")
def gateway_generator(encoder: Int8Embedder) -> VilmoGenerator:
    """The step as the gateway builds it: the shipped reader and the judge's second look."""
    from vilmo.instruct.second_look import SecondLook
    from vilmo.judge.value_model import BuiltinClassifier

    reader = shipped_reader()
    if reader is None:
        pytest.skip("no reader weights in vilmo/models/stakes_reader")
    return VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load(),
                          second_look=SecondLook(BuiltinClassifier()))


@pytest.mark.parametrize("prompt", DISTRESS)
def test_distress_gets_self_harm_or_care_principles(gateway_generator: VilmoGenerator,
                                                     prompt: str) -> None:
    instruction = ask(gateway_generator, prompt, shipped("default"))
    assert instruction.text.startswith(HEADER)
    assert any(pid.split("/")[0] in DISTRESS_COVERED_BY for pid in instruction.principle_ids)
    assert instruction.stakes[0] == "safety.self_harm"
    assert instruction.principle_ids[0] == DISTRESS_PRINCIPLE


@pytest.mark.parametrize("prompt", DISTRESS)
def test_distress_without_the_detector_gets_nothing(prompt: str) -> None:
    """The regression the detector fixes: the reader and the second look alone miss these."""
    from vilmo.instruct.second_look import SecondLook
    from vilmo.judge.value_model import BuiltinClassifier

    reader = shipped_reader()
    if reader is None:
        pytest.skip("no reader weights in vilmo/models/stakes_reader")
    alone = VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load(),
                           second_look=SecondLook(BuiltinClassifier()), distress=None)
    assert ask(alone, prompt, shipped("default")).empty


def test_distress_needs_a_policy_value_for_it(gateway_generator: VilmoGenerator) -> None:
    """A policy that weighs neither self-harm nor care gets no distress principles."""
    base = shipped("default").model_dump()
    values = {k: v for k, v in base["values"].items() if k not in DISTRESS_COVERED_BY}
    policy = Policy.model_validate(base | {"values": values})
    instruction = ask(gateway_generator, DISTRESS[0], policy)
    assert not {pid.split("/")[0] for pid in instruction.principle_ids} & set(DISTRESS_COVERED_BY)


def test_everyday_prompts_skip_the_embedding_for_distress(
        gateway_generator: VilmoGenerator) -> None:
    """The detector's prefilter (the reader's outputs) keeps the embedding half from running
    for a plain everyday prompt: the step's cost for it is unchanged."""
    reading, distressed = gateway_generator.read_distress("How do I bake bread?")
    assert not distressed and not reading.embedded


@pytest.mark.parametrize("prompt", ["I'm dying to see the new Dune movie",
                                    "how do I kill a zombie process on linux"])
def test_distress_look_alikes_get_nothing(gateway_generator: VilmoGenerator, prompt: str) -> None:
    assert ask(gateway_generator, prompt, shipped("default")).empty


@pytest.mark.parametrize("prompt", EVERYDAY)
def test_everyday_prompts_get_nothing_from_the_gateway_step(gateway_generator: VilmoGenerator,
                                                            prompt: str) -> None:
    assert ask(gateway_generator, prompt, shipped("default")).empty


def test_threshold_and_baseline_are_the_policys(generator: VilmoGenerator) -> None:
    base = shipped("default").model_dump()
    with_baseline = Policy.model_validate(
        base | {"instructions": base["instructions"] | {"baseline": "Be helpful and honest."}})
    bread = ask(generator, "How do I bake bread?", with_baseline)
    assert bread.text == "Be helpful and honest." and bread.principle_ids == ()
    assert ask(generator, REVENGE, with_baseline).principle_ids  # the baseline is not added
    always = Policy.model_validate(
        base | {"instructions": base["instructions"] | {"stakes_threshold": 0.0}})
    assert ask(generator, "How do I bake bread?", always).principle_ids
    never = Policy.model_validate(
        base | {"instructions": base["instructions"] | {"stakes_threshold": 1.0}})
    assert ask(generator, REVENGE, never).empty
    assert ask(generator, "   ", shipped("default")).empty  # a blank prompt is never read


def test_one_system_message_instruction_first() -> None:
    instruction = Instruction("Follow these values in your reply:\n- Be kind.", ("mft.care/x",))
    messages = [{"role": "system", "content": "You are a terse assistant."},
                {"role": "user", "content": "hi"}]
    snapshot = repr(messages)
    placed = apply_instruction(messages, instruction, "system")
    assert [m["role"] for m in placed] == ["system", "user"]
    assert placed[0]["content"] == f"{instruction.text}\n\nYou are a terse assistant."
    assert repr(messages) == snapshot
    parts: Messages = [{"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
                       {"role": "user", "content": "hi"}]
    placed = apply_instruction(parts, instruction, "system")
    assert len(placed) == 2
    assert placed[0]["content"] == [{"type": "text", "text": instruction.text},
                                    {"type": "text", "text": "Be terse."}]
    # No system message of the client's: one is added; nothing to inject: nothing changes.
    plain = [{"role": "user", "content": "hi"}]
    assert apply_instruction(plain, instruction, "system")[0] == {"role": "system",
                                                                  "content": instruction.text}
    assert apply_instruction(messages, Instruction(""), "system") == messages


def test_regeneration_strengthens_without_repeating() -> None:
    bank = PrincipleBank.load()
    policy = Policy.model_validate({"name": "t", "values": {"mft.care": {}, "mft.fairness": {}},
                                    "instructions": {"style": "reasoned"}})
    care = [p for p in bank.for_policy(policy) if p.value == "mft.care"]
    first = compose(care[:2], "reasoned", "vilmo")
    once = strengthen(first, ["mft.care"], policy, bank)
    twice = strengthen(once, ["mft.care", "mft.fairness"], policy, bank)
    for instruction in (once, twice):
        lines = instruction.text.splitlines()
        assert not [line for line, n in Counter(lines).items() if n > 1], instruction.text
        assert sum(line.startswith(STRENGTHEN_LEAD) for line in lines) == 1
        assert len(set(instruction.principle_ids)) == len(instruction.principle_ids)
        assert all(line in instruction.text for line in first.text.splitlines())
    # The care principles already in the instruction are not added again, new ones are.
    assert set(once.principle_ids) - set(first.principle_ids) == {care[2].id, care[3].id}
    assert twice.text.splitlines()[0].endswith(
        "went against Care / harm, Fairness / cheating. Write a reply that fully respects "
        "these values:")
    assert twice.violated == ("mft.care", "mft.fairness")
    assert twice.generator == "vilmo+regenerate"


def test_int8_encoder_matches_fp32_and_caches(encoder: Int8Embedder) -> None:
    texts = ["How do I bake bread?", REVENGE, "The committee approved the new budget."]
    int8 = encoder.encode(texts)
    fp32 = Embedder().encode(texts)
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-3)
    assert (np.sum(int8 * fp32, axis=1) > 0.97).all()
    small = Int8Embedder(cache_size=2)
    first = small.encode(texts)
    assert len(small.cache) == 2 and np.array_equal(small.encode(texts[1:]), first[1:])
    assert small.encode([]).shape == (0, 384)
    # A long prompt is cached under a digest, not its text: the cache stays small whatever
    # clients send, and the same text still hits.
    long = "Tell me about bread. " * 5000
    vector = small.encode([long])
    assert all(len(key) < 300 for key in small.cache._items)
    assert np.array_equal(small.encode([long]), vector)
