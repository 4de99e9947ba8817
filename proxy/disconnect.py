"""Work for a client that left is cancelled, not finished.

Starlette cancels a streaming response when its client disconnects, but not a handler that is
still working on its answer (a plain reply, a buffered stream, a check). While such work runs,
a watcher reads the next ASGI message; ``http.disconnect`` cancels the handler's task (which
closes the upstream call and drops unscored check parts), and the handler raises
``ClientClosed`` (status 499 in metrics and the audit record).

That one cancel can be dropped by code the work awaits (review r3: Python 3.11 passes a
task's cancel into the task it awaits, the instruction step's, where ``asyncio.wait_for``
returned the step's result, its future being done, and dropped the cancellation; six of
eight clients that left went on to the upstream, were billed and recorded 200). So it holds
whatever the work does: once the client has left, the work's first resumption that is not
the cancellation gets the cancellation instead (``_CancelKept``), and work that ends anyway
(it dropped the cancel in its own frames) is still ``ClientClosed``, its stream closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

from starlette.types import Receive

from proxy.errors import ClientClosed
from proxy.outcome import Stream

T = TypeVar("T")


class _CancelKept(Generic[T]):
    """Awaits ``work``, step by step as ``await`` does, except that once ``left()`` the first
    time ``work`` would be resumed with anything but a ``CancelledError`` (a value or another
    error: an inner task that ended anyway), the ``CancelledError`` is thrown into it instead.
    Later steps (its clean-up) go through untouched."""

    def __init__(self, work: Awaitable[T], left: Callable[[], bool]) -> None:
        self.work = work
        self.left = left

    def __await__(self) -> Generator[Any, Any, T]:
        steps: Generator[Any, Any, T] = self.work.__await__()
        delivered = False  # the cancellation reached the work since the client left
        value: Any = None
        error: BaseException | None = None
        while True:
            if not delivered and self.left():
                delivered = True
                if not isinstance(error, asyncio.CancelledError):
                    error = asyncio.CancelledError()
            try:
                yielded = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = yield yielded
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - passed on into the work, as await does
                error = exc


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
        result = await _CancelKept(work, lambda: left)
    except (asyncio.CancelledError, Exception):
        if not left:
            raise
        handler.uncancel()
        raise ClientClosed("the client closed the connection", code="client_closed") from None
    finally:
        watcher.cancel()
    if left:  # the work dropped the cancellation and ended anyway: its answer is nobody's
        handler.uncancel()
        if isinstance(result, Stream):  # its upstream call is let go
            with contextlib.suppress(Exception):
                await result.items.aclose()  # type: ignore[attr-defined]
        raise ClientClosed("the client closed the connection", code="client_closed")
    return result
