"""Work for a client that left is cancelled, not finished.

Starlette cancels a streaming response when its client disconnects, but not a handler that is
still working on its answer (a plain reply, a buffered stream, a check). While such work runs,
a watcher reads the next ASGI message; ``http.disconnect`` cancels the handler's task (which
closes the upstream call and drops unscored check parts), and the handler raises
``ClientClosed`` (status 499 in metrics and the audit record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

from proxy.errors import ClientClosed

T = TypeVar("T")


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """The result of ``work``, or ClientClosed once the client has gone (``work`` cancelled).
    Call it only after the request body was read: it reads the next ASGI message."""
    handler = asyncio.current_task()
    assert handler is not None
    left = False

    async def watch() -> None:
        nonlocal left
        while (await receive())["type"] != "http.disconnect":
            pass
        left = True
        handler.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        handler.uncancel()
        raise ClientClosed("the client closed the connection", code="client_closed") from None
    finally:
        watcher.cancel()
