"""The judge reads a text once even when two threads ask for it at the same time (the input
check and the instruction step's second look run side by side; so do the micro-batcher's
workers): the second caller waits for the first's reading instead of running the network
again. No model is loaded: the network's pass is replaced by a slow counting one."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier, _Reading


class CountingJudge(BuiltinClassifier):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.passes: list[list[str]] = []
        self.fail = fail
        self.started = threading.Event()

    def _values(self, items: Sequence[ScoreInput]) -> list[_Reading]:
        self.passes.append([it.response for it in items])
        self.started.set()
        time.sleep(0.3)
        if self.fail:
            raise RuntimeError("network failed")
        return [(np.full(3, len(it.response), dtype=np.float32),) * 3
                for it in items]


def read_side_by_side(judge: CountingJudge, first: list[str], second: list[str],
                      ) -> list[object]:
    results: list[object] = [None, None]

    def run(at: int, texts: list[str]) -> None:
        try:
            results[at] = judge.readings([ScoreInput(t, "p") for t in texts])
        except RuntimeError as error:
            results[at] = error

    one = threading.Thread(target=run, args=(0, first))
    one.start()
    assert judge.started.wait(5)
    two = threading.Thread(target=run, args=(1, second))
    two.start()
    one.join(5)
    two.join(5)
    return results


def test_a_text_being_read_is_not_read_again_by_another_thread() -> None:
    judge = CountingJudge()
    first, second = read_side_by_side(judge, ["same reply"], ["same reply", "other reply"])
    assert judge.passes == [["same reply"], ["other reply"]]
    assert isinstance(first, list) and isinstance(second, list)
    assert second[0] is first[0]


@pytest.mark.parametrize("cache_size", [0, 16])
def test_a_failed_reading_fails_its_waiters_and_is_not_remembered(cache_size: int) -> None:
    judge = CountingJudge(fail=True)
    judge._cache_size = cache_size
    first, second = read_side_by_side(judge, ["same reply"], ["same reply"])
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)
    assert judge.passes == [["same reply"]] and judge._reading == {}
    judge.fail = False
    judge.readings([ScoreInput("same reply", "p")])
    assert judge.passes == [["same reply"], ["same reply"]]
