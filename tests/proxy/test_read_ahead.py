"""Issue 16: with a core idle, the judge starts reading the prompt (for the instruction step's
second look) alongside the request reader's pass, instead of after it; never when other checks
or instruction steps run, nor where the input check reads the prompt anyway. Fakes behind the
seams that meet each other across threads (a read-ahead that ran after the step, or not at all,
leaves the step waiting in vain)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from classifier_fakes import GatedClassifier

from proxy.guard import Guard
from proxy.metrics import Metrics
from vilmo.instruct.instructions import NO_INSTRUCTION, Instruction
from vilmo.judge.classifier import ScoreInput, ValueScores
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.policy import Policy, load_policy
from vilmo.types import Messages

WAIT_S = 3.0
MESSAGES: Messages = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Can you help me 3d print a gun?"},
]


class RecordingJudge:
    """A judge that notes what it read (and that a reading started)."""

    def __init__(self, fail: bool = False) -> None:
        self.read: list[tuple[str | None, str]] = []
        self.started = threading.Event()
        self.fail = fail

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        self.read += [(i.prompt, i.response) for i in items]
        self.started.set()
        if self.fail:
            raise RuntimeError("the judge failed")
        return [ValueScores({v: 0.0 for v in value_ids}, {}) for _ in items]


@dataclass
class SecondLookOf:
    judge: RecordingJudge


@dataclass
class WaitingGenerator:
    """A model-backed generator whose pass waits for the judge's reading to have started."""

    second_look: SecondLookOf
    met: list[bool] = field(default_factory=list)

    def generate(self, messages: Messages, policy: Policy) -> Instruction:
        self.met.append(self.second_look.judge.started.wait(WAIT_S))
        return Instruction("Respect care.", ("care-1",), "vilmo", ("mft.care",))


def instruction(
    guard: Guard,
    generator: WaitingGenerator,
    policy: Policy,
) -> tuple[Instruction, float]:
    async def main() -> tuple[Instruction, float]:
        made = await guard.instruction(generator, MESSAGES, policy)
        await asyncio.sleep(0.05)  # the read-ahead's outcome is retrieved
        return made

    return asyncio.run(main())


def test_an_idle_gateway_reads_the_prompt_with_the_judge_alongside_the_instruction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("proxy.guard.spare_core", lambda: True)  # on a busy machine too
    policy = load_policy("vilmo/policies/default.yaml")
    guard = Guard(lambda p: RecordingJudge(), Metrics(["stub"]))
    generator = WaitingGenerator(SecondLookOf(RecordingJudge()))
    made, _ = instruction(guard, generator, policy)
    assert generator.met == [True] and made.text == "Respect care."
    # the text the second look reads: the last user turn, alone (not with a reply)
    assert generator.second_look.judge.read == [(None, "Can you help me 3d print a gun?")]
    assert guard.read_ahead == 1 and guard.busy == 0


def test_no_read_ahead_while_a_check_runs_nor_where_the_input_check_reads_the_prompt() -> None:
    policy = load_policy("vilmo/policies/default.yaml")
    gated = GatedClassifier(BUILTIN_VALUES)
    guard = Guard(lambda p: gated, Metrics(["stub"]))
    generator = WaitingGenerator(SecondLookOf(RecordingJudge()))

    async def main() -> None:
        check = asyncio.ensure_future(guard.check(policy, [ScoreInput("a reply")], "output"))
        while not gated.started.is_set():
            await asyncio.sleep(0.001)
        generator.second_look.judge.started.set()  # the step does not wait in vain
        await guard.instruction(generator, MESSAGES, policy)
        gated.release.set()
        await check
        await guard.aclose()

    asyncio.run(main())
    checked_input = policy.model_copy(
        update={"checks": policy.checks.model_copy(update={"input": True})}
    )
    instruction(guard, generator, checked_input)
    assert generator.second_look.judge.read == [] and guard.read_ahead == 0


def test_a_failed_read_ahead_leaves_the_instruction_to_the_step() -> None:
    policy = load_policy("vilmo/policies/default.yaml")
    guard = Guard(lambda p: RecordingJudge(), Metrics(["stub"]))
    generator = WaitingGenerator(SecondLookOf(RecordingJudge(fail=True)))
    made, _ = instruction(guard, generator, policy)
    assert made != NO_INSTRUCTION and made.text == "Respect care."
    assert guard.metrics.guard_errors.labels("instruction")._value.get() == 0


def test_no_read_ahead_when_other_jobs_keep_the_cores_busy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.guard.serving_cores", lambda: 2)
    monkeypatch.setattr("proxy.guard.runnable_threads", lambda: 3)  # this thread and two more
    policy = load_policy("vilmo/policies/default.yaml")
    guard = Guard(lambda p: RecordingJudge(), Metrics(["stub"]))
    generator = WaitingGenerator(SecondLookOf(RecordingJudge()))
    generator.second_look.judge.started.set()
    instruction(guard, generator, policy)
    assert generator.second_look.judge.read == [] and guard.read_ahead == 0
    monkeypatch.setattr("proxy.guard.runnable_threads", lambda: 1)  # only this thread
    instruction(guard, generator, policy)
    assert guard.read_ahead == 1
