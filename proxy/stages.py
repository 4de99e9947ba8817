"""Where a request's time goes: the upstream call and the value checks, per request.

A ``StageClock`` lives in a context variable for the request (set by ``KeyAuth``), so the seams
that spend the time (``TimedUpstream``, the guard's checks) add to it without the request record
being passed down to them, and the metrics read it when the request is recorded. The gateway's own
overhead is the total less the upstream's time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from proxy.upstream import Chunk, Completion, Upstream

TimedStage = Literal["upstream", "check"]


@dataclass(slots=True)
class StageClock:
    upstream: float = 0.0
    """Seconds waiting for the upstream: whole replies, and streams until their first chunk."""
    check: float = 0.0
    """Seconds in value checks (input, reply, stream windows)."""


current_clock: ContextVar[StageClock | None] = ContextVar("vilmo_stage_clock", default=None)


def start_clock() -> StageClock:
    """A fresh clock for the request running in this context."""
    clock = StageClock()
    current_clock.set(clock)
    return clock


@contextmanager
def timed(stage: TimedStage) -> Iterator[None]:
    """Add the block's time to the request's clock (nothing outside a request)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        clock = current_clock.get()
        if clock is not None:
            setattr(clock, stage, getattr(clock, stage) + time.perf_counter() - started)


class TimedUpstream:
    """An ``Upstream`` whose calls are timed into the request's clock."""

    def __init__(self, inner: Upstream) -> None:
        self.inner = inner

    def serves(self, model: str) -> bool:
        return self.inner.serves(model)

    def model_names(self) -> list[str]:
        return self.inner.model_names()

    async def complete(self, params: dict[str, Any]) -> Completion:
        with timed("upstream"):
            return await self.inner.complete(params)

    async def stream(self, params: dict[str, Any]) -> AsyncIterator[Chunk]:
        chunks = self.inner.stream(params)
        try:
            with timed("upstream"):
                first = await anext(chunks, None)
            if first is None:
                return
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
