"""A micro-batcher: concurrent checks share encoder passes, and large checks share them fairly.

``await batcher.score(item, value_ids)`` queues a job. An idle batcher runs it at once (after
one turn of the event loop, so calls made together, as ``score_many``'s, share a batch): a
lone check never waits for company. Under load the batches form by themselves: the checks that
arrive while a batch runs make up the next one. A text longer than ``part_chars`` is
split into overlapping parts (``split_text``), every one of which is scored: nothing is
sampled. Each batch takes the next part of every waiting job, in turn (up to ``max_batch``
parts and ``max_batch_chars`` characters), and is scored in one ``classifier.score`` call in a
worker thread, so the event loop never blocks. A small check queued behind a 1 MB one
therefore waits for the batch in flight (one part of the large job) and shares its own batch
with one more part, not for the whole large job. A job whose caller stopped
waiting (a check timeout, a client that left) is dropped with its unscored parts. The job's
scores are, per id, the maxima over its parts, as the classifier max-pools its own windows.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vilmo.judge.classifier import ScoreInput, ValueClassifier, ValueScores

_SPACE = re.compile(r"\s")


def split_text(text: str, part_chars: int, overlap_chars: int) -> list[str]:
    """Parts of at most ``part_chars`` covering the text; neighbours overlap by at least
    ``overlap_chars - 200``, so any passage that short is read whole by one part. Boundaries
    move (by up to 100 characters, and a tenth of a part) onto whitespace, so no part starts
    inside a word, and depend only on the text around them: a growing reply keeps its earlier
    parts (which the classifier's cache then recognises)."""
    if len(text) <= part_chars:
        return [text]
    step = max(1, part_chars - overlap_chars)
    snap = min(100, part_chars // 10)
    parts, start = [], 0
    while True:
        begin = _after_space(text, start, snap) if start else 0
        if start + part_chars >= len(text):
            parts.append(text[begin:])
            return parts
        parts.append(text[begin:_before_space(text, start + part_chars, snap)])
        start += step


def _after_space(text: str, at: int, snap: int) -> int:
    found = _SPACE.search(text, at, at + snap)
    return found.end() if found else at


def _before_space(text: str, at: int, snap: int) -> int:
    cut = max(text.rfind(" ", at - snap, at), text.rfind("\n", at - snap, at))
    return cut if cut > 0 else at


@dataclass(eq=False)
class _Job:
    parts: deque[ScoreInput]
    value_ids: tuple[str, ...]
    future: asyncio.Future[ValueScores]
    unscored: int
    violation: dict[str, float] = field(default_factory=dict)
    upholds: dict[str, float] = field(default_factory=dict)

    def add(self, scores: ValueScores) -> None:
        if self.future.done():
            return
        for mine, theirs in ((self.violation, scores.violation), (self.upholds, scores.upholds)):
            for v, s in theirs.items():
                if v in self.value_ids:
                    mine[v] = max(mine.get(v, 0.0), s)
        self.unscored -= 1
        if self.unscored == 0:
            self.future.set_result(ValueScores(self.violation, self.upholds))

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


Part = tuple[_Job, ScoreInput]


class MicroBatcher:
    """Runs queued ``score`` calls' parts as fair batches: at once when idle, and what queued
    meanwhile as the next batch when busy."""

    def __init__(self, classifier: ValueClassifier, max_batch: int = 64,
                 part_chars: int = 3000, overlap_chars: int = 500,
                 max_batch_chars: int = 8000) -> None:
        self.classifier = classifier
        self.max_batch = max_batch
        self.part_chars, self.overlap_chars = part_chars, overlap_chars
        self.max_batch_chars = max_batch_chars
        self.batches_run = 0
        self.parts_scored = 0
        self._jobs: deque[_Job] = deque()  # jobs with parts left, in round-robin order
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vilmo-classifier")

    async def score(self, item: ScoreInput, value_ids: Sequence[str]) -> ValueScores:
        """This item's scores, computed in batches with whatever else arrived meanwhile."""
        loop = asyncio.get_running_loop()
        if self._arrived is None or self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._worker = loop.create_task(self._run(self._arrived))
        texts = split_text(item.response, self.part_chars, self.overlap_chars)
        job = _Job(deque(ScoreInput(t, item.prompt) for t in texts), tuple(value_ids),
                   loop.create_future(), len(texts))
        self._jobs.append(job)
        self._arrived.set()
        return await job.future  # cancelling the caller cancels the future: the job is dropped

    async def score_many(self, items: Sequence[ScoreInput],
                         value_ids: Sequence[str]) -> list[ValueScores]:
        return list(await asyncio.gather(*(self.score(i, value_ids) for i in items)))

    async def aclose(self) -> None:
        """Stop the worker; pending calls are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for job in self._jobs:
            job.future.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, arrived: asyncio.Event) -> None:
        while True:
            await arrived.wait()
            # One turn of the loop, no timed window: calls made in the same turn join this
            # batch; a lone call runs now, and calls that come while it runs form the next.
            await asyncio.sleep(0)
            batch = self._take()
            if not batch:
                arrived.clear()
                continue
            await self._execute(batch)

    def _take(self) -> list[Part]:
        """One round: the next part of each waiting job, in turn (a job that has more goes to
        the back). Dropped jobs (nobody waits for them) are skipped with their parts."""
        batch: list[Part] = []
        chars = 0
        for _ in range(len(self._jobs)):
            job = self._jobs[0]
            if job.future.done() or not job.parts:
                self._jobs.popleft()
                continue
            size = len(job.parts[0].response) + len(job.parts[0].prompt or "")
            if batch and (len(batch) >= self.max_batch or chars + size > self.max_batch_chars):
                break
            self._jobs.popleft()
            batch.append((job, job.parts.popleft()))
            chars += size
            if job.parts:
                self._jobs.append(job)
        return batch

    async def _execute(self, batch: list[Part]) -> None:
        loop = asyncio.get_running_loop()
        ids = tuple(dict.fromkeys(v for job, _ in batch for v in job.value_ids))
        self.batches_run += 1
        self.parts_scored += len(batch)
        try:
            results = await loop.run_in_executor(
                self._pool, self.classifier.score, [part for _, part in batch], ids)
        except Exception as exc:  # noqa: BLE001 - every caller gets its own outcome below
            jobs = list(dict.fromkeys(job for job, _ in batch))
            if len(jobs) == 1:
                jobs[0].fail(exc)
                return
            # One bad request (an unknown id) must not fail its neighbours: score each alone.
            for job in jobs:
                parts = [part for owner, part in batch if owner is job]
                try:
                    alone = await loop.run_in_executor(
                        self._pool, self.classifier.score, parts, job.value_ids)
                except Exception as exc:  # noqa: BLE001 - handed to that caller
                    job.fail(exc)
                    continue
                for scores in alone:
                    job.add(scores)
            return
        for (job, _), scores in zip(batch, results, strict=True):
            job.add(scores)
