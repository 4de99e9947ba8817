"""Issue 16: the padded batches of one check run side by side on idle cores, each computed as
it would be alone (so the scores do not change)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vilmo.judge import value_onnx
from vilmo.judge.value_onnx import run_batches
from vilmo.types import Matrix


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for rows, width in ((1, 143), (5, 52), (3, 20)):
        ids = rng.integers(0, 30000, size=(rows, width), dtype=np.int64)
        out.append((ids, np.ones_like(ids)))
    return out


def net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
    """A stand-in network: one row of outputs per input row."""
    out: Matrix = np.stack([(ids * mask).sum(axis=1), ids.max(axis=1)], axis=1).astype(np.float32)
    return out


def test_outputs_are_the_sequential_ones_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    work = batches()
    together = run_batches(net, work)
    assert [o.shape[0] for o in together] == [1, 5, 3]
    for got, (ids, mask) in zip(together, work, strict=True):
        assert np.array_equal(got, net(ids, mask))


def test_batches_run_at_the_same_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call waits until another has started: run one after the other, the first would
    wait in vain."""
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    started = [threading.Event(), threading.Event()]
    overlapped = []

    def waiting_net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
        me = int(ids[0, 0])
        started[me].set()
        overlapped.append(started[1 - me].wait(5))
        return net(ids, mask)

    work = [(np.full((1, 4), i, dtype=np.int64), np.ones((1, 4), dtype=np.int64))
            for i in (0, 1)]
    out = run_batches(waiting_net, work)
    assert overlapped == [True, True]
    assert [int(o[0, 1]) for o in out] == [0, 1]


def test_one_core_runs_in_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 1)
    threads = set()

    def recording_net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
        threads.add(threading.get_ident())
        return net(ids, mask)

    run_batches(recording_net, batches())
    assert threads == {threading.get_ident()}


def test_a_multithreaded_network_runs_its_batches_in_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline jobs give the session every core: side by side would oversubscribe them."""
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    threads = set()

    class FourThreads:
        threads = 4

        def __call__(self, ids: np.ndarray, mask: np.ndarray) -> Matrix:
            threads.add(threading.get_ident())
            return net(ids, mask)

    run_batches(FourThreads(), batches())
    assert threads == {threading.get_ident()}


def test_the_caller_shares_out_many_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (speed): with many batches the calling thread keeps taking batches while the
    side thread works; it used to run only the first and wait while one side thread ran all
    the others in turn (about one core's throughput on two). Here the side thread's batch
    waits until the caller has run every other batch: in turn, it would wait in vain."""
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    caller = threading.get_ident()
    side_started, rest_done = threading.Event(), threading.Event()
    by_caller: list[int] = []
    waited = []
    work = [(np.full((1, 4), i, dtype=np.int64), np.ones((1, 4), dtype=np.int64))
            for i in range(6)]

    def blocking_net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
        if threading.get_ident() == caller:
            side_started.wait(5)
            by_caller.append(int(ids[0, 0]))
            if len(by_caller) == len(work) - 1:
                rest_done.set()
        else:
            side_started.set()
            waited.append(rest_done.wait(5))
        return net(ids, mask)

    out = run_batches(blocking_net, work)
    assert waited == [True]
    assert len(by_caller) == len(work) - 1
    assert [int(o[0, 1]) for o in out] == list(range(6))


def test_a_failing_batch_fails_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)

    def failing_net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
        if int(ids[0, 0]) == 3:
            raise ValueError("bad batch")
        return net(ids, mask)

    work = [(np.full((1, 4), i, dtype=np.int64), np.ones((1, 4), dtype=np.int64))
            for i in range(6)]
    with pytest.raises(ValueError, match="bad batch"):
        run_batches(failing_net, work)


def test_no_helper_while_other_checks_use_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17 (speed): when another check already runs on the second core (the micro-batcher
    runs one batch per core), the side thread does not join this check's batches: three
    threads on two cores were slower than two (idle 2-core Xeon, 2 concurrent callers of 20
    replies each: 124 against 134 replies/s, median of 4 rounds)."""
    monkeypatch.setattr(value_onnx, "serving_cores", lambda: 2)
    other_running, release = threading.Event(), threading.Event()

    def other_net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
        other_running.set()
        release.wait(5)
        return net(ids, mask)

    other = threading.Thread(target=run_batches, args=(other_net, batches()[:1]))
    other.start()
    try:
        assert other_running.wait(5)
        caller = threading.get_ident()
        threads: list[int] = []

        def recording_net(ids: np.ndarray, mask: np.ndarray) -> Matrix:
            if not threads:
                time.sleep(0.3)  # room for a helper to start and take a batch
            threads.append(threading.get_ident())
            return net(ids, mask)

        work = [(np.full((1, 4), i, dtype=np.int64), np.ones((1, 4), dtype=np.int64))
                for i in range(6)]
        out = run_batches(recording_net, work)
        assert set(threads) == {caller}
        assert [int(o[0, 1]) for o in out] == list(range(6))
    finally:
        release.set()
        other.join()
