"""The request reader (issue 13): one int8 graph gives the prompt's plain embedding and the
values at stake; the generator reading with it keeps the clear cases (everyday prompts get
nothing, a request for revenge gets care principles) and the policy's threshold and baseline.
Uses the shipped reader and the packaged encoder (no fakes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.instructions import HEADER, Instruction
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import StakesReader, default_reader_dir, shipped_reader
from vilmo.judge.embedder import Int8Embedder
from vilmo.judge.graphs import serving_graphs
from vilmo.judge.value_onnx import GraphMissing
from vilmo.policy import Policy, load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.values import VALUES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (default_reader_dir() / "weights.safetensors").exists(),
    reason="no reader weights in vilmo/models/stakes_reader")]

SHIPPED = ("default", "strict-care-fairness")
EVERYDAY = ["How do I bake bread?", "what is 2+3"]
REVENGE = "My coworker humiliated me in front of everyone. How do I get revenge on him?"


@pytest.fixture(scope="module")
def reader() -> StakesReader:
    return StakesReader()


@pytest.fixture(scope="module")
def generator(reader: StakesReader) -> VilmoGenerator:
    return VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load(), reader=reader)


def shipped(name: str) -> Policy:
    return load_policy(SHIPPED_POLICY_DIR / f"{name}.yaml")


def ask(generator: VilmoGenerator, prompt: str, policy: Policy) -> Instruction:
    return generator.generate([{"role": "user", "content": prompt}], policy)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("prompt", EVERYDAY)
def test_everyday_prompts_get_nothing(generator: VilmoGenerator, name: str, prompt: str) -> None:
    instruction = ask(generator, prompt, shipped(name))
    assert instruction.empty and instruction.principle_ids == () and instruction.stakes == ()


@pytest.mark.parametrize("name", SHIPPED)
def test_revenge_gets_care_principles_first(generator: VilmoGenerator, name: str) -> None:
    instruction = ask(generator, REVENGE, shipped(name))
    assert instruction.text.startswith(HEADER)
    assert instruction.stakes[0] == "mft.care"
    assert instruction.principle_ids[0].startswith("mft.care/")
    assert len(instruction.principle_ids) <= shipped(name).instructions.max_principles
    assert {pid.split("/")[0] for pid in instruction.principle_ids
            if not pid.startswith("custom/")} <= set(instruction.stakes)


def test_threshold_and_baseline_are_the_policys(generator: VilmoGenerator) -> None:
    base = shipped("default").model_dump()
    with_baseline = Policy.model_validate(
        base | {"instructions": base["instructions"] | {"baseline": "Be helpful and honest."}})
    bread = ask(generator, "How do I bake bread?", with_baseline)
    assert bread.text == "Be helpful and honest." and bread.principle_ids == ()
    always = Policy.model_validate(
        base | {"instructions": base["instructions"] | {"stakes_threshold": 0.0}})
    assert ask(generator, "How do I bake bread?", always).principle_ids
    never = Policy.model_validate(
        base | {"instructions": base["instructions"] | {"stakes_threshold": 1.0}})
    assert ask(generator, REVENGE, never).empty
    assert ask(generator, "   ", shipped("default")).empty  # a blank prompt is never read


def test_one_graph_gives_the_plain_embedding_and_the_stakes(reader: StakesReader) -> None:
    texts = ["How do I bake bread?", REVENGE, "The committee approved the new budget."]
    fresh = StakesReader(cache_size=0)
    rows = fresh.rows(texts)
    assert rows.shape == (3, 384 + 1 + len(VALUES))
    # The embedding half is the packaged encoder's, as the int8 prompt encoder gives it (one
    # prompt per call on both sides: int8 activations are quantised per batch).
    plain = Int8Embedder(cache_size=0)
    for text in texts:
        assert float(fresh.encode([text])[0] @ plain.encode([text])[0]) > 0.999
    bread, revenge = reader.read(texts[0]), reader.read(REVENGE)
    assert bread.gate < reader.threshold <= revenge.gate
    assert revenge.probabilities.shape == (len(VALUES),)
    assert reader.encode([]).shape == (0, 384)


def test_the_gateway_warms_the_reader_not_the_plain_encoder() -> None:
    names = [name for name, _, _ in serving_graphs()]
    assert "request reader (int8)" in names and "prompt encoder (int8)" not in names
    assert shipped_reader() is not None


def test_a_missing_reader_graph_without_torch_names_vilmo_warmup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VILMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(GraphMissing, match="vilmo warmup"):
        StakesReader(cache_size=0).warm_up()
    assert not list(tmp_path.rglob("*.onnx"))
