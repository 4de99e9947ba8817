"""A check whose request is cancelled as its scores come in ends cancelled (``Guard._scores``).

Review r3: under Python 3.11, ``asyncio.wait_for`` runs its awaitable as a task of its own and,
cancelled while that task is already done, returns the task's result and drops the
cancellation. A check bounded by it could hand its verdict to a request whose client had left
(the request then went on to the upstream, or past it). ``asyncio.timeout`` runs the scoring
in the request's own task: the cancellation is raised there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from fakes import KeywordClassifier

from proxy.guard import Guard
from proxy.metrics import Metrics
from vilmo.judge.classifier import ScoreInput
from vilmo.policy import Policy, load_policy


def test_a_check_cancelled_as_its_scores_come_in_ends_cancelled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    policy = load_policy("vilmo/policies/default.yaml")
    guard = Guard(lambda p: KeywordClassifier(), Metrics(["stub"]))
    went_on: list[bool] = []

    async def main() -> None:
        scores: asyncio.Future[list[dict[str, float]]] = (
            asyncio.get_running_loop().create_future())

        async def scored(self: Guard, policy: Policy, items: Sequence[ScoreInput],
                         ) -> list[dict[str, float]]:
            return await scores

        monkeypatch.setattr(Guard, "_score", scored)

        async def request() -> None:
            await guard.check(policy, [ScoreInput("a calm reply")], "input")
            went_on.append(True)  # on to the upstream

        task = asyncio.ensure_future(request())
        for _ in range(5):
            await asyncio.sleep(0)  # the check waits for its scores
        scores.set_result([{}])  # the scores come in ...
        task.cancel()  # ... as the client leaves
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert went_on == []
