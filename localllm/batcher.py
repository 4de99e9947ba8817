"""Gathers concurrent requests into batches for the engine, which runs in one worker thread.

A request waits at most ``max_wait_s`` for others to join its batch (up to ``batch_size``);
while the engine is busy, new requests queue and form the next batch. Streamed text is handed
from the engine thread to each request's asyncio queue with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from localllm.engine import Engine, GenRequest, GenResult

DONE = object()


@dataclass
class _Pending:
    request: GenRequest
    future: asyncio.Future[GenResult]


@dataclass
class Batcher:
    """The one way into the engine: ``complete`` (whole reply) and ``stream`` (text pieces)."""

    engine: Engine
    batch_size: int = 32
    max_wait_s: float = 0.02
    batch_sizes: list[int] = field(default_factory=list)
    """Sizes of the batches run so far (for tests and logs)."""
    _queue: asyncio.Queue[_Pending] | None = None
    _worker: asyncio.Task[None] | None = None
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1))

    async def complete(self, request: GenRequest) -> GenResult:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        return await pending.future

    async def stream(self, request: GenRequest) -> AsyncIterator[str | GenResult]:
        """Text pieces as they are generated, then the GenResult."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        def forward(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        request.on_text = forward
        task = asyncio.create_task(self.complete(request))
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, DONE))
        while (item := await pieces.get()) is not DONE:
            yield str(item)
        yield await task

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(),
                                                        max(deadline - loop.time(), 0)))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # cancelled while waiting
            if not live:
                continue
            self.batch_sizes.append(len(live))
            try:
                results = await loop.run_in_executor(
                    self._pool, self.engine.generate, [p.request for p in live])
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests only
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, result in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
