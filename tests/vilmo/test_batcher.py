"""The micro-batcher gathers concurrent calls into one classifier batch."""

from __future__ import annotations

import asyncio

import pytest
from classifier_fakes import KeywordClassifier

from vilmo.batcher import MicroBatcher
from vilmo.classifier import ScoreInput, UnknownValue


def test_concurrent_calls_share_one_batch() -> None:
    fake = KeywordClassifier(["mft.care", "mft.fairness"])

    async def main() -> list:
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

    async def main() -> tuple:
        batcher = MicroBatcher(fake, max_wait_ms=30)
        try:
            return await asyncio.gather(batcher.score(ScoreInput("a"), ["mft.care"]),
                                        batcher.score(ScoreInput("b"), ["mft.unknown"]),
                                        return_exceptions=True)
        finally:
            await batcher.aclose()

    good, bad = asyncio.run(main())
    assert good.violation == {"mft.care": 0.1}
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
