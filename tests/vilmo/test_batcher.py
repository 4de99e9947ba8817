"""The micro-batcher gathers concurrent calls into one classifier batch, and splits large\ntexts into parts that share the judge fairly (issue 12, point 2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from classifier_fakes import KeywordClassifier

from vilmo.judge.batcher import MicroBatcher, split_text
from vilmo.judge.classifier import ScoreInput, UnknownValue, ValueScores


def test_concurrent_calls_share_one_batch() -> None:
    fake = KeywordClassifier(["mft.care", "mft.fairness"])

    async def main() -> list[ValueScores]:
        batcher = MicroBatcher(fake, max_wait_ms=50, max_batch=64)
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
        batcher = MicroBatcher(fake, max_wait_ms=20, max_batch=8)
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
        batcher = MicroBatcher(fake, max_wait_ms=30)
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
    """Parts of 100 characters, two per batch: a 20,000-character text is ~250 batches."""
    return MicroBatcher(fake, max_wait_ms=1, part_chars=100, overlap_chars=30,
                        max_batch_chars=200)


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
