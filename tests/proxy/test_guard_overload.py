"""Issue 16: under load the guard refuses a check the judge's queue cannot reach before the
check timeout at once (503 with Retry-After when the policy fails closed), instead of letting it
queue until the timeout."""

from __future__ import annotations

import asyncio

import pytest
from classifier_fakes import GatedClassifier

from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.metrics import Metrics
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.heads import BUILTIN_VALUES
from vilmo.policy import load_policy
from vilmo.verdict import Verdict


def test_an_overloaded_judge_fails_closed_at_once_with_retry_after() -> None:
    policy = load_policy("vilmo/policies/default.yaml")
    assert policy.on_error == "closed"
    judge = GatedClassifier(BUILTIN_VALUES)
    guard = Guard(lambda p: judge, Metrics(["stub"]))

    async def main() -> tuple[GuardFailed, bool, Verdict]:
        first = asyncio.ensure_future(guard.check(policy, [ScoreInput("x" * 2000)], "output"))
        while not judge.started.is_set():
            await asyncio.sleep(0.001)
        batcher = guard._batcher(policy)
        # as measured: 2,000 characters take longer than the policy's timeout
        batcher.seconds_per_char = 4 * policy.checks.timeout_s / 2000 * batcher.workers
        with pytest.raises(GuardFailed) as refused:
            await guard.check(policy, [ScoreInput("a calm reply")], "output")
        still_running = not first.done()  # refused while the batch ahead was still running
        judge.release.set()
        verdict = await first
        await guard.aclose()
        assert isinstance(verdict, Verdict)
        return refused.value, still_running, verdict

    error, still_running, verdict = asyncio.run(main())
    assert error.status == 503 and error.code == "guard_unavailable"
    assert error.headers == {"Retry-After": "1"} and "overloaded" in error.message
    assert still_running and verdict.violation_ids == []
