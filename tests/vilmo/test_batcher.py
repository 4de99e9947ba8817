"""The micro-batcher gathers concurrent calls into one classifier batch, and splits large\ntexts into parts that share the judge fairly (issue 12, point 2)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from classifier_fakes import GatedClassifier, KeywordClassifier

from vilmo.judge.batcher import MicroBatcher, Overloaded, split_text
from vilmo.judge.classifier import ScoreInput, UnknownValue, ValueScores


def test_concurrent_calls_share_one_batch() -> None:
    fake = KeywordClassifier(["mft.care", "mft.fairness"])

    async def main() -> list[ValueScores]:
        batcher = MicroBatcher(fake, max_batch=64)
        try:
            return await asyncio.gather(
                *(batcher.score(ScoreInput(f"reply {i} BAD:mft.care"), ["mft.care"])
                  for i in range(20)),
                batcher.score(ScoreInput("other"), ["mft.fairness"]))
        finally:
            await batcher.aclose()

    results = asyncio.run(main())
    assert fake.batches == [21]
    assert all(r.violation == {"mft.care": 0.9} for r in results[:20])
    assert results[20].violation == {"mft.fairness": 0.1}


def test_max_batch_splits_and_later_calls_form_new_batches() -> None:
    fake = KeywordClassifier(["mft.care"])

    async def main() -> None:
        batcher = MicroBatcher(fake, max_batch=8)
        await asyncio.gather(*(batcher.score(ScoreInput(str(i)), ["mft.care"])
                               for i in range(20)))
        await batcher.score(ScoreInput("late"), ["mft.care"])
        await batcher.aclose()

    asyncio.run(main())
    assert sum(fake.batches) == 21
    assert max(fake.batches) <= 8 and fake.batches[-1] == 1


def test_one_bad_request_does_not_fail_its_neighbours() -> None:
    fake = KeywordClassifier(["mft.care"])

    async def main() -> tuple[ValueScores | BaseException, ValueScores | BaseException]:
        batcher = MicroBatcher(fake)
        try:
            return await asyncio.gather(batcher.score(ScoreInput("a"), ["mft.care"]),
                                        batcher.score(ScoreInput("b"), ["mft.unknown"]),
                                        return_exceptions=True)
        finally:
            await batcher.aclose()

    good, bad = asyncio.run(main())
    assert isinstance(good, ValueScores) and good.violation == {"mft.care": 0.1}
    assert isinstance(bad, UnknownValue)


def test_errors_reach_the_caller() -> None:
    fake = KeywordClassifier(["mft.care"])

    async def main() -> None:
        batcher = MicroBatcher(fake)
        try:
            with pytest.raises(UnknownValue):
                await batcher.score(ScoreInput("x"), ["nope"])
        finally:
            await batcher.aclose()

    asyncio.run(main())


class SlowFake(KeywordClassifier):
    """The keyword fake taking 5 ms per call, recording the texts of every call."""

    def __init__(self) -> None:
        super().__init__(["mft.care"])
        self.texts: list[list[str]] = []

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        time.sleep(0.005)
        self.texts.append([i.response for i in items])
        return super().score(items, value_ids)


def small_parts(fake: KeywordClassifier) -> MicroBatcher:
    """Parts of 100 characters, two per batch: a 20,000-character text is ~250 batches; one
    batch at a time (the order of the parts is the subject)."""
    return MicroBatcher(fake, part_chars=100, overlap_chars=30,
                        max_batch_chars=200, workers=1)


def test_split_text_covers_every_passage() -> None:
    text = " ".join(f"w{i:04d}" for i in range(2000))
    parts = split_text(text, 400, 300)
    assert all(len(p) <= 400 for p in parts) and parts[0].startswith("w0000")
    assert parts[-1].endswith("w1999")
    for i in range(2000 - 16):  # every passage of 100 characters is whole in some part
        passage = text[i * 6:i * 6 + 100]
        assert any(passage in p for p in parts), i
    assert all(p.split(" ")[0] in text.split(" ") for p in parts)  # no part starts mid-word
    assert split_text("short", 400, 300) == ["short"]
    assert all(p.strip() for p in split_text("calm words " * 200, 100, 30))


def test_every_part_of_a_long_text_is_scored() -> None:
    fake = KeywordClassifier(["mft.care"])

    async def main() -> list[ValueScores]:
        batcher = small_parts(fake)
        try:
            late = "calm words " * 500 + "BAD:mft.care"
            return [await batcher.score(ScoreInput(late), ["mft.care"]),
                    await batcher.score(ScoreInput("calm words " * 500), ["mft.care"])]
        finally:
            await batcher.aclose()

    bad, good = asyncio.run(main())
    assert bad.violation == {"mft.care": 0.9} and good.violation == {"mft.care": 0.1}
    assert max(fake.batches) <= 2  # never one call for the whole text


@pytest.mark.slow  # seconds of real time: processes, servers or timing
def test_a_small_check_is_not_starved_by_a_large_one() -> None:
    fake = SlowFake()

    async def main() -> tuple[bool, int, int]:
        batcher = small_parts(fake)
        try:
            large = asyncio.ensure_future(batcher.score(ScoreInput("calm words " * 2000),
                                                        ["mft.care"]))
            while batcher.batches_run < 3:
                await asyncio.sleep(0.001)
            queued_at = batcher.batches_run
            await batcher.score(ScoreInput("a small reply"), ["mft.care"])
            served_at, large_done = batcher.batches_run, large.done()
            await large
            return large_done, served_at - queued_at, batcher.batches_run
        finally:
            await batcher.aclose()

    large_done, waited, total = asyncio.run(main())
    assert not large_done  # the small check finished while the large one was still running
    assert waited <= 2 < total  # it waited for the batch in flight at most, not the large job


def test_parts_of_an_abandoned_check_are_not_scored() -> None:
    fake = SlowFake()

    async def main() -> tuple[int, int]:
        batcher = small_parts(fake)
        try:
            large = asyncio.ensure_future(batcher.score(ScoreInput("calm words " * 2000),
                                                        ["mft.care"]))
            while batcher.batches_run < 2:
                await asyncio.sleep(0.001)
            large.cancel()  # what a check timeout or a client that left does
            cancelled_at = batcher.parts_scored
            await batcher.score(ScoreInput("next"), ["mft.care"])
            await asyncio.sleep(0.05)
            return cancelled_at, batcher.parts_scored
        finally:
            await batcher.aclose()

    cancelled_at, scored = asyncio.run(main())
    parts = len(split_text("calm words " * 2000, 100, 30))
    assert scored <= cancelled_at + 3 < parts  # the batch in flight and "next", nothing more


def test_a_lone_check_runs_at_once_without_a_timed_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: an idle batcher does not sleep a batching window before a lone check (it
    used to wait 5 ms for company that never came). Every sleep the batcher asks for is
    recorded: none may be longer than one turn of the loop. Only this thread's sleeps count:
    the patch is process-wide, and a server thread of an earlier test may still be winding
    down (uvicorn's loop ticks with 0.1 s sleeps)."""
    fake = KeywordClassifier(["mft.care"])
    slept: list[float] = []
    real_sleep = asyncio.sleep
    here = threading.get_ident()

    async def recording_sleep(delay: float, result: object = None) -> object:
        if threading.get_ident() == here:
            slept.append(delay)
            return await real_sleep(0, result)
        return await real_sleep(delay, result)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)

    async def main() -> ValueScores:
        batcher = MicroBatcher(fake)
        try:
            return await batcher.score(ScoreInput("alone BAD:mft.care"), ["mft.care"])
        finally:
            await batcher.aclose()

    result = asyncio.run(main())
    assert result.violation == {"mft.care": 0.9} and fake.batches == [1]
    assert all(delay == 0 for delay in slept), slept


class GatedFake(KeywordClassifier):
    """The keyword fake whose first call blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(["mft.care"])
        self.started = threading.Event()
        self.release = threading.Event()

    def score(self, items: Sequence[ScoreInput], value_ids: Sequence[str]) -> list[ValueScores]:
        self.started.set()
        assert self.release.wait(10)
        return super().score(items, value_ids)


def test_checks_that_arrive_during_a_batch_form_the_next_batch() -> None:
    """Under load batching still forms: a lone check runs at once, and the five that come
    while it runs are scored together in one batch."""
    fake = GatedFake()

    async def main() -> list[ValueScores]:
        batcher = MicroBatcher(fake, workers=1)  # one batch at a time: the next one forms
        try:
            first = asyncio.ensure_future(batcher.score(ScoreInput("first"), ["mft.care"]))
            while not fake.started.is_set():
                await asyncio.sleep(0.001)
            later = [asyncio.ensure_future(batcher.score(ScoreInput(f"later {i}"), ["mft.care"]))
                     for i in range(5)]
            await asyncio.sleep(0)
            fake.release.set()
            return [await first, *[await f for f in later]]
        finally:
            await batcher.aclose()

    results = asyncio.run(main())
    assert fake.batches == [1, 5]
    assert all(r.violation == {"mft.care": 0.1} for r in results)


def test_a_second_worker_scores_while_a_batch_runs() -> None:
    """Issue 16: with two workers a check that arrives while a batch runs is scored at once
    on the other (one batch at a time left the second core idle under load)."""
    fake = GatedClassifier(["mft.care"])

    async def main() -> tuple[ValueScores, bool, ValueScores]:
        batcher = MicroBatcher(fake, workers=2)
        try:
            first = asyncio.ensure_future(batcher.score(ScoreInput("first"), ["mft.care"]))
            while not fake.started.is_set():
                await asyncio.sleep(0.001)
            second = await asyncio.wait_for(
                batcher.score(ScoreInput("second BAD:mft.care"), ["mft.care"]), 5)
            first_done = first.done()
            fake.release.set()
            return second, first_done, await first
        finally:
            fake.release.set()
            await batcher.aclose()

    second, first_done, first = asyncio.run(main())
    assert second.violation == {"mft.care": 0.9} and not first_done
    assert first.violation == {"mft.care": 0.1}


def test_a_check_the_queue_cannot_reach_in_time_is_refused_at_once() -> None:
    """Issue 16: under load a check that would wait past its deadline is refused at once
    (``Overloaded``), not queued to time out; the queued checks and checks without a deadline
    still run, and an idle batcher refuses nothing."""
    fake = GatedClassifier(["mft.care"])

    async def main() -> tuple[bool, int, ValueScores, ValueScores]:
        batcher = MicroBatcher(fake, workers=1)
        batcher.seconds_per_char = 0.01  # as measured: 100 characters a second
        try:
            first = asyncio.ensure_future(batcher.score(ScoreInput("x" * 300), ["mft.care"]))
            while not fake.started.is_set():
                await asyncio.sleep(0.001)
            refused = False
            try:
                await batcher.score(ScoreInput("a reply"), ["mft.care"], within=1.0)
            except Overloaded:
                refused = True
            patient = asyncio.ensure_future(
                batcher.score(ScoreInput("no deadline"), ["mft.care"]))
            await asyncio.sleep(0)
            fake.release.set()
            await first
            await patient
            idle = await batcher.score(ScoreInput("y" * 500), ["mft.care"], within=0.1)
            return refused, batcher.refused, await patient, idle
        finally:
            fake.release.set()
            await batcher.aclose()

    refused, count, patient, idle = asyncio.run(main())
    assert refused and count == 1
    assert patient.violation == {"mft.care": 0.1} and idle.violation == {"mft.care": 0.1}
