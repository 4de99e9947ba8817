"""Work whose size a client (or an upstream) chooses runs in a worker thread past a size: on
the event loop it would hold every other request of the worker (``/healthz`` included); below
the size a thread hand-off costs more than the work.

Those threads are ``CLIENT_WORK_THREADS`` of their own (``client_work``), not the event loop's
default executor: that one also runs every keyed request's store calls (``store.admit``,
``reserve_tokens``, ``settle``: ``proxy.client_keys``), and eight concurrent 1.5-million-character
checks, each read for seconds before its 413, filled it and held another tenant's small chat
request 9 s. Client-sized work now queues behind its own kind only."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

OFF_LOOP_CHARS = 20_000
"""The most characters of text read (for the judge, or counted for a key's ``tpm``) on the
event loop: reading every decode level costs up to about 1 µs a character (a megabyte of
``\\u`` escapes or backslashes 0.7-1.1 s on a shared core); past it, a worker thread reads."""

CLIENT_WORK_THREADS = 4
"""The threads that run client-sized work (``off_loop_past``). The work is pure Python and
regular expressions, which hold the GIL: more threads would only contend for it (the machine
has 2 cores), and a few keep one large request from queueing all the others behind it."""

client_work = ThreadPoolExecutor(CLIENT_WORK_THREADS, thread_name_prefix="vilmo-client-work")
"""The executor of ``off_loop_past``: apart from the default one, which the store calls use."""


async def off_loop_past(size: int, limit: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, in a ``client_work`` thread when ``size`` is over ``limit`` (with the
    caller's context, as ``asyncio.to_thread`` runs it)."""
    if size > limit:
        run = functools.partial(contextvars.copy_context().run, work, *args)
        return await asyncio.get_running_loop().run_in_executor(client_work, run)
    return work(*args)
