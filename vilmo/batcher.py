"""A micro-batcher: concurrent requests share one encoder pass.

``await batcher.score(item, value_ids)`` queues the request; calls arriving within
``max_wait_ms`` of the first (or until ``max_batch``) are scored in one ``classifier.score``
call in a worker thread, so the event loop never blocks and throughput under load approaches the
encoder's batched rate. While a batch runs, new requests gather for the next one. Pure asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vilmo.classifier import ScoreInput, ValueClassifier, ValueScores


@dataclass(slots=True)
class _Pending:
    item: ScoreInput
    value_ids: tuple[str, ...]
    future: asyncio.Future[ValueScores]


class MicroBatcher:
    """Collects ``score`` calls for a few milliseconds and runs them as one batch."""

    def __init__(self, classifier: ValueClassifier, max_wait_ms: float = 5.0,
                 max_batch: int = 64) -> None:
        self.classifier = classifier
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch = max_batch
        self.batches_run = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vilmo-classifier")

    async def score(self, item: ScoreInput, value_ids: Sequence[str]) -> ValueScores:
        """This item's scores, computed in a batch with whatever else arrived meanwhile."""
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run(self._queue))
        future: asyncio.Future[ValueScores] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(item, tuple(value_ids), future))
        return await future

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
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            live = [p for p in batch if not p.future.done()]
            if live:
                await self._execute(live)

    async def _execute(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        ids = tuple(dict.fromkeys(v for p in batch for v in p.value_ids))
        self.batches_run += 1
        try:
            results = await loop.run_in_executor(
                self._pool, self.classifier.score, [p.item for p in batch], ids)
        except Exception as exc:  # noqa: BLE001 - every caller gets its own outcome below
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            # One bad request (an unknown id) must not fail its neighbours: score each alone.
            for p in batch:
                try:
                    alone = await loop.run_in_executor(
                        self._pool, self.classifier.score, [p.item], p.value_ids)
                    _settle(p, alone[0])
                except Exception as exc:  # noqa: BLE001 - handed to that caller
                    _settle(p, exc=exc)
            return
        for p, res in zip(batch, results, strict=True):
            _settle(p, ValueScores({v: res.violation[v] for v in p.value_ids},
                                   {v: s for v, s in res.upholds.items() if v in p.value_ids}))


def _settle(p: _Pending, result: ValueScores | None = None,
            exc: BaseException | None = None) -> None:
    if p.future.done():
        return
    if exc is not None:
        p.future.set_exception(exc)
    elif result is not None:
        p.future.set_result(result)
