"""The judge's pass over a prompt the request reader has just read starts from the reader's
bottom layers (issue 16): its logits, the second look's readings and the instructions are the
judge's own whole graph's, bit for bit; the shortcut serves only one-row batches of the ids the
reader read; and a judge whose bottom is not the reader's is left as it is. Uses the shipped
reader and judge and the packaged encoder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest

from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.shared_bottom import BottomStates, connect
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import StakesReader, default_reader_dir
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.graph_files import cached_file
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.value_onnx import Int8Session, shared_session
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR

pytestmark = pytest.mark.skipif(not (default_reader_dir() / "weights.safetensors").exists(),
                                reason="no reader weights in vilmo/models/stakes_reader")

SUBJECTS = ["my neighbour", "a coworker", "my sister", "my landlord", "the new intern"]
ACTS = ["insulted me", "lied to me", "read my diary", "spread a rumour about me"]


def prompts() -> list[str]:
    """The benches' grievance questions (a third get the second look), the everyday dev
    prompts and the project's written requests, and a few odd shapes."""
    folder = resources.files("vilmo").joinpath("data", "prompts")
    rows = [json.loads(line) for name in ("everyday.jsonl", "written_requests.jsonl")
            for line in folder.joinpath(name).read_text("utf-8").splitlines() if line.strip()]
    written = [r["prompt"] for r in rows if r.get("split") in ("dev", "train")
               and r["id"].startswith(("written", "everyday"))]
    grievances = [f"{s} {a} (case {i}). What should I do?"
                  for i, (s, a) in enumerate((s, a) for a in ACTS for s in SUBJECTS)]
    odd = ["Ünïcödé text, emoji 🙂 and numbers 12345.", "word " * 300,
           "First sentence here is long enough. And a second one that is long enough too."]
    return grievances + written[:60] + [r["prompt"] for r in rows
                                        if r.get("split") == "dev"] + odd


def judge_session(judge: BuiltinClassifier) -> Int8Session:
    target = judge.graph_path()
    return shared_session(cached_file(target) or target, judge.threads)


@pytest.fixture()
def pair() -> Iterator[tuple[StakesReader, BuiltinClassifier, BottomStates]]:
    """A fresh reader and an uncached judge, connected; the judge's (process-wide) session
    without its shortcut afterwards."""
    reader, judge = StakesReader(cache_size=0), BuiltinClassifier(cache_size=0)
    states = connect(reader, judge)
    assert states is not None
    try:
        yield reader, judge, states
    finally:
        judge_session(judge).shortcut = None


def test_judge_logits_from_the_readers_bottom_are_its_whole_graphs(
        pair: tuple[StakesReader, BuiltinClassifier, BottomStates]) -> None:
    reader, judge, states = pair
    session = judge_session(judge)
    texts = prompts()
    shortcut, session.shortcut = session.shortcut, None
    before = [judge.score([ScoreInput(t)], BUILTIN_VALUES, calibrated=False)[0] for t in texts]
    session.shortcut = shortcut
    after = []
    for text in texts:
        reader.read(text)
        after.append(judge.score([ScoreInput(text)], BUILTIN_VALUES, calibrated=False)[0])
    for text, old, new in zip(texts, before, after, strict=True):
        assert old.violation == new.violation, text
    assert states.hits >= len(texts) - 5  # all but texts read in several rows


def test_second_look_and_instructions_unchanged(
        pair: tuple[StakesReader, BuiltinClassifier, BottomStates]) -> None:
    reader, judge, states = pair
    session = judge_session(judge)
    generator = VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load(),
                               second_look=SecondLook(judge))
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    texts = prompts()
    shortcut, session.shortcut = session.shortcut, None
    before = [generator.choose(t, policy) for t in texts]
    session.shortcut = shortcut
    looked = states.hits
    after = [generator.choose(t, policy) for t in texts]
    assert after == before
    assert states.hits - looked >= 3  # second looks served from the reader's bottom


def test_only_one_row_batches_of_the_read_ids_take_the_shortcut(
        pair: tuple[StakesReader, BuiltinClassifier, BottomStates]) -> None:
    reader, judge, states = pair
    session = judge_session(judge)
    text = "My landlord read my diary. What should I do?"
    reader.read(text)  # the reader's pass keeps its hidden states
    found = reader.bottom(text)
    assert found is not None
    ids, mask, _ = found
    other = ids.copy()
    other[0, 2] += 1
    two = np.concatenate([ids, ids])
    for batch in ((other, mask), (two, np.ones_like(two))):
        hits = states.hits
        session(*batch)
        assert states.hits == hits
    hits = states.hits
    assert np.array_equal(session(ids, mask), session.graph_outputs(ids, mask)[0])
    assert states.hits == hits + 1


class OtherBottomJudge(BuiltinClassifier):
    """The shipped judge, its config claiming fewer frozen layers than the reader's."""

    @property
    def config(self) -> dict[str, object]:
        return {**super().config, "n_frozen": 2}


def test_a_judge_with_another_bottom_is_left_alone() -> None:
    reader, judge = StakesReader(cache_size=0), OtherBottomJudge(cache_size=0)
    session = judge_session(judge)
    assert session.shortcut is None
    assert connect(reader, judge) is None
    assert session.shortcut is None and reader.on_bottom is None


def test_a_judge_whose_logits_differ_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    reader, judge = StakesReader(cache_size=0), BuiltinClassifier(cache_size=0)
    bottom = reader.bottom

    def nudged(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        found = bottom(text)
        assert found is not None
        return found[0], found[1], found[2] * np.float32(1.001)

    monkeypatch.setattr(reader, "bottom", nudged)
    assert connect(reader, judge) is None
    assert judge_session(judge).shortcut is None and reader.on_bottom is None
