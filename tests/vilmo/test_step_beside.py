"""The instruction step's second look and the reader's embedding half side by side (issue 16):
``vilmo.judge.value_onnx.beside`` and its fallbacks, and the step's instructions the same as
with the two in turn."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from vilmo.instruct import generator as generator_module
from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import shipped_reader
from vilmo.judge import value_onnx
from vilmo.judge.classifier import ScoreInput, ValueScores
from vilmo.judge.value_onnx import beside
from vilmo.policy import load_policy
from vilmo.policy_store import SHIPPED_POLICY_DIR

SUBJECTS = ["my neighbour", "a coworker", "my sister", "a stranger online", "my landlord"]
ACTS = ["insulted me", "lied to me", "copied my work", "spread a rumour about me",
        "read my diary", "broke my bike"]
GRIEVANCES = [f"{s} {a} (case {i}). What should I do?" for i, (s, a) in
              enumerate((s, a) for s in SUBJECTS for a in ACTS)][:16]
"""The benches' grievance questions: about half land in the second look's band and pass the
distress detector's prefilter."""


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)


@pytest.mark.usefixtures("two_cores")
def test_aside_runs_on_a_side_thread_while_here_runs() -> None:
    taken = threading.Event()

    def here() -> str:
        assert taken.wait(10), "no side thread took aside while here ran"
        return "here"

    def aside() -> int:
        taken.set()
        return threading.get_ident()

    first, where = beside(here, aside)
    assert first == "here" and where != threading.get_ident()


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")


@pytest.mark.usefixtures("two_cores")
def test_aside_sees_the_callers_context() -> None:
    """As ``asyncio.to_thread``: a request's log fields and traces follow it to the side."""
    token = REQUEST.set("req-1")
    taken = threading.Event()

    def aside() -> tuple[str, int]:
        taken.set()
        return REQUEST.get(), threading.get_ident()

    try:
        _, (seen, where) = beside(lambda: taken.wait(10), aside)
    finally:
        REQUEST.reset(token)
    assert seen == "req-1" and where != threading.get_ident()


@pytest.mark.usefixtures("two_cores")
def test_aside_runs_here_when_no_side_thread_is_free() -> None:
    """A side pool busy with a check's batch: the call never waits for it."""
    pool = value_onnx.side_pool()
    release = threading.Event()
    busy = [pool.submit(release.wait, 10) for _ in range(pool._max_workers)]
    try:
        assert beside(lambda: 1, threading.get_ident) == (1, threading.get_ident())
    finally:
        release.set()
        for job in busy:
            job.result()


@pytest.mark.usefixtures("two_cores")
def test_aside_runs_here_while_checks_hold_the_other_cores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(value_onnx._RUNNING, "now", lambda: 1)
    assert beside(lambda: 1, threading.get_ident) == (1, threading.get_ident())


def test_one_core_runs_both_here_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 1)
    order: list[str] = []

    def here() -> int:
        order.append("here")
        return 1

    def aside() -> int:
        order.append("aside")
        return threading.get_ident()

    assert beside(here, aside) == (1, threading.get_ident()) and order == ["here", "aside"]


@pytest.mark.usefixtures("two_cores")
@pytest.mark.parametrize("failing", ["here", "aside"])
def test_either_failure_is_raised(failing: str) -> None:
    def boom() -> int:
        raise ValueError(failing)

    calls: dict[str, Callable[[], int]] = {"here": lambda: 1, "aside": lambda: 2}
    calls[failing] = boom
    with pytest.raises(ValueError, match=failing):
        beside(calls["here"], calls["aside"])


class FlaggingJudge:
    """A second look's judge that flags one value, chosen by the question (so a look whose
    result is lost or swapped shows), and records the threads that asked."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        self.threads.add(threading.get_ident())
        return [ValueScores({v: 0.9 if k == len(item.response) % len(value_ids) else 0.0
                             for k, v in enumerate(value_ids)}) for item in items]


def fresh_generator(judge: FlaggingJudge) -> VilmoGenerator:
    """The step with the shipped reader and distress detector, and empty caches (each
    generator reads every question itself)."""
    reader = shipped_reader()
    if reader is None:
        pytest.skip("no reader weights in vilmo/models/stakes_reader")
    return VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load(),
                          second_look=SecondLook(judge))


def test_the_step_chooses_as_with_the_two_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same instructions as the step that ran the embedding half and then, in ``judge``,
    the second look; the side-by-side path taken for several of the questions, the look on
    the calling thread."""
    policy = load_policy(SHIPPED_POLICY_DIR / "default.yaml")
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    side_by_side = 0

    def counted(here: Callable[[], Any], aside: Callable[[], Any]) -> tuple[Any, Any]:
        nonlocal side_by_side
        side_by_side += 1
        return beside(here, aside)

    monkeypatch.setattr(generator_module, "beside", counted)
    judge = FlaggingJudge()
    found = [fresh_generator(judge).choose(q, policy) for q in GRIEVANCES]
    assert side_by_side >= 2 and judge.threads == {threading.get_ident()}
    apart = fresh_generator(FlaggingJudge())  # as before: the embedding, then the look
    monkeypatch.setattr(apart, "_looks_twice", lambda reading, policy: False)
    expected = [apart.choose(q, policy) for q in GRIEVANCES]
    assert [(i.text, i.principle_ids, i.stakes) for i in found] == [
        (i.text, i.principle_ids, i.stakes) for i in expected]
