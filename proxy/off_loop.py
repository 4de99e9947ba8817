"""Work whose size a client (or an upstream) chooses runs in a worker thread past a size: on
the event loop it would hold every other request of the worker (``/healthz`` included); below
the size a thread hand-off costs more than the work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

OFF_LOOP_CHARS = 20_000
"""The most characters of text read (for the judge, or counted for a key's ``tpm``) on the
event loop: reading every decode level costs up to about 1 µs a character (a megabyte of
``\\u`` escapes or backslashes 0.7-1.1 s on a shared core); past it, a worker thread reads."""


async def off_loop_past(size: int, limit: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, in a worker thread when ``size`` is over ``limit``."""
    if size > limit:
        return await asyncio.to_thread(work, *args)
    return work(*args)
