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
Sharing a call moves no score: the built-in classifier batches each text's rows apart
(``vilmo.judge.pooling.item_batches``), so a check scores the same alone and in company.

Under load, up to ``workers`` batches run at once (one per core: the judge runs one ONNX
thread per call, so one batch at a time leaves the other cores idle), and a check that could
not start before its deadline (``within`` seconds, the caller's check timeout) is refused at
once with ``Overloaded``, from the work already queued and the measured scoring rate, instead
of queueing to time out: the caller fails fast, and the checks already queued keep theirs.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from vilmo.errors import VilmoError
from vilmo.judge.classifier import ScoreInput, ValueClassifier, ValueScores
from vilmo.judge.value_onnx import serving_cores

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


class Overloaded(VilmoError, RuntimeError):
    """The work queued ahead would not be scored before the check's deadline."""


def _size(part: ScoreInput) -> int:
    return len(part.response) + len(part.prompt or "")


class MicroBatcher:
    """Runs queued ``score`` calls' parts as fair batches: at once when idle, and what queued
    meanwhile as the next batch when busy."""

    def __init__(self, classifier: ValueClassifier, max_batch: int = 64,
                 part_chars: int = 3000, overlap_chars: int = 500,
                 max_batch_chars: int = 8000, workers: int | None = None) -> None:
        self.classifier = classifier
        self.workers = workers or serving_cores()
        self.max_batch = max_batch
        self.part_chars, self.overlap_chars = part_chars, overlap_chars
        self.max_batch_chars = max_batch_chars
        self.batches_run = 0
        self.parts_scored = 0
        self._jobs: deque[_Job] = deque()  # jobs with parts left, in round-robin order
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.refused = 0
        self.seconds_per_char: float | None = None
        """Measured: a batch's seconds over its characters (moving average), for ``within``."""
        self._waiting_chars = 0  # characters of the parts not yet in a batch
        self._running_chars = 0  # characters of the batches being scored
        self._slots: asyncio.Semaphore | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                        thread_name_prefix="vilmo-classifier")

    async def score(self, item: ScoreInput, value_ids: Sequence[str],
                    within: float | None = None) -> ValueScores:
        """This item's scores, computed in batches with whatever else arrived meanwhile;
        ``Overloaded`` at once if the queue ahead would not be scored in ``within`` seconds."""
        return (await self.score_many([item], value_ids, within))[0]

    async def score_many(self, items: Sequence[ScoreInput], value_ids: Sequence[str],
                         within: float | None = None) -> list[ValueScores]:
        loop = asyncio.get_running_loop()
        self.admit(items, within)
        if self._arrived is None or self._worker is None or self._worker.done():
            self._arrived = asyncio.Event()
            self._slots = asyncio.Semaphore(self.workers)
            self._worker = loop.create_task(self._run(self._arrived, self._slots))
        jobs = []
        for item in items:
            texts = split_text(item.response, self.part_chars, self.overlap_chars)
            job = _Job(deque(ScoreInput(t, item.prompt) for t in texts), tuple(value_ids),
                       loop.create_future(), len(texts))
            self._waiting_chars += sum(_size(p) for p in job.parts)
            self._jobs.append(job)
            jobs.append(job)
        self._arrived.set()
        # cancelling the caller cancels the futures: the jobs are dropped
        return list(await asyncio.gather(*(job.future for job in jobs)))

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being scored (a check that timed out leaves its batch
        running until it ends)."""
        return self._waiting_chars + self._running_chars == 0

    def expected_wait(self, chars: int = 0) -> float:
        """Seconds until the queued work and ``chars`` more would be scored, at the measured
        rate with every worker busy (0 before anything was measured); the batches in flight
        count half (on average, half done)."""
        if self.seconds_per_char is None:
            return 0.0
        queued = self._waiting_chars + self._running_chars / 2 + chars
        return queued * self.seconds_per_char / self.workers

    def admit(self, items: Sequence[ScoreInput], within: float | None) -> None:
        """Refuse (``Overloaded``) work that the queue would not reach in ``within`` seconds.
        An idle batcher takes anything: a lone large check is the timeout's to judge."""
        if within is None or self._waiting_chars + self._running_chars == 0:
            return
        wait = self.expected_wait(sum(_size(i) for i in items))
        if wait > within:
            self.refused += 1
            raise Overloaded(f"the judge is overloaded: about {wait:.1f} s of checks queued, "
                             f"over the {within:g} s check timeout")

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

    async def _run(self, arrived: asyncio.Event, slots: asyncio.Semaphore) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await arrived.wait()
                await slots.acquire()
                # One turn of the loop, no timed window: calls made in the same turn join this
                # batch; a lone call runs now, and calls that come while batches run form the
                # next (a free worker takes it at once).
                await asyncio.sleep(0)
                batch = self._take()
                if not batch:
                    slots.release()
                    arrived.clear()
                    continue
                task = asyncio.get_running_loop().create_task(self._execute(batch))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in running:
                task.cancel()

    def _take(self) -> list[Part]:
        """One round: the next part of each waiting job, in turn (a job that has more goes to
        the back). Dropped jobs (nobody waits for them) are skipped with their parts."""
        batch: list[Part] = []
        chars = 0
        for _ in range(len(self._jobs)):
            job = self._jobs[0]
            if job.future.done() or not job.parts:
                self._jobs.popleft()
                self._waiting_chars -= sum(_size(p) for p in job.parts)
                job.parts.clear()
                continue
            size = _size(job.parts[0])
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
        chars = sum(_size(part) for _, part in batch)
        self._waiting_chars -= chars
        self._running_chars += chars
        started = loop.time()
        try:
            results = await loop.run_in_executor(
                self._pool, self.classifier.score, [part for _, part in batch], ids)
            self._measured(chars, loop.time() - started)
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
        finally:
            self._running_chars -= chars
        for (job, _), scores in zip(batch, results, strict=True):
            job.add(scores)

    def _measured(self, chars: int, seconds: float) -> None:
        """Fold one batch's rate into the moving average (cache hits make a batch cheap, so
        the average leans to the recent batches)."""
        rate = seconds / max(1, chars)
        old = self.seconds_per_char
        self.seconds_per_char = rate if old is None else 0.7 * old + 0.3 * rate
