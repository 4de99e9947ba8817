"""A client's disconnect is never lost (``proxy.disconnect.unless_disconnected``).

Review r3 (t10): eight clients closed their connection right after sending a chat request; six
of them reached the upstream (called and billed) and were recorded 200 ``relayed`` instead of
499 ``abandoned``. The watcher cancelled the handler once; the handler was awaiting the
instruction step's task, so Python 3.11 passed the cancel into it, and ``asyncio.wait_for``
in ``step_lanes.Lane.run`` returned the step's result, its future being done, and dropped the
cancellation. The handler never learnt that its client had left.

The tests drop the cancellation deterministically, as that ``wait_for`` does when the step's
result comes in as the client leaves, whatever ``step_lanes`` does now.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from fakes import FakeUpstream, MemoryAudit, app_with, fake_services

from proxy import step_lanes
from proxy.disconnect import unless_disconnected
from proxy.errors import ClientClosed
from proxy.guard import Guard
from proxy.outcome import Facts, Stream
from vilmo.instruct.principles import PrincipleBank

CLIENTS = 8

leaving: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar(
    "test_leaving", default=None)
"""The request's 'the client leaves now' signal, set by the step that drops the cancel."""


async def step_dropping_the_cancel(self: step_lanes.Lane, timeout: float,
                                   work: Callable[..., Any], *args: Any) -> Any:
    """``Lane.run`` as Python 3.11's ``wait_for`` ends it when the thread's result is in as its
    request is cancelled: the result is returned and the cancellation dropped."""
    result = work(*args)
    event = leaving.get()
    assert event is not None
    event.set()  # the client leaves now: the watcher cancels the handler, which waits here
    try:
        await asyncio.get_running_loop().create_future()  # the waiter; only the cancel ends it
    except asyncio.CancelledError:
        return result  # wait_for (3.11): ``if fut.done(): return fut.result()``
    raise AssertionError("unreachable")


async def post_then_leave(app: Any, body: bytes, sent: list[dict[str, Any]]) -> None:
    """One client: sends its request, then closes its connection once its step has run."""
    event = asyncio.Event()
    leaving.set(event)
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await event.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "http_version": "1.1",
             "scheme": "http", "root_path": "", "server": ("gateway", 80),
             "client": ("client", 1), "app": app,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"x-vilmo-policy", b"g-block-buffer")]}
    await app(scope, receive, send)


@pytest.mark.parametrize("stream", [False, True])
def test_clients_that_leave_during_the_step_never_reach_the_upstream(
        policy_dir: Path, bank: PrincipleBank, monkeypatch: pytest.MonkeyPatch,
        stream: bool) -> None:
    monkeypatch.setattr(step_lanes.Lane, "run", step_dropping_the_cancel)
    monkeypatch.setattr(Guard, "in_place", lambda *_: False)  # each step through its lane
    upstream = FakeUpstream()
    services = fake_services(policy_dir, bank, upstream)
    app = app_with(services)
    body = json.dumps({"model": "stub", "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()

    async def clients() -> None:
        await asyncio.gather(*(post_then_leave(app, body, []) for _ in range(CLIENTS)))

    asyncio.run(asyncio.wait_for(clients(), 10))
    audit = cast(MemoryAudit, services.audit)
    assert upstream.calls == []
    assert sorted((r.status, r.error_code, r.enforced) for r in audit.records) == [
        ("499", "client_closed", "abandoned")] * CLIENTS


def left_at_once() -> Callable[[], Any]:
    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}
    return receive


def test_a_cancel_dropped_by_an_inner_task_is_delivered_again() -> None:
    went_on: list[str] = []
    waiting = asyncio.Event()

    async def step() -> str:
        try:
            waiting.set()
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            return "instruction"  # the cancel, dropped
        return "unreachable"

    async def work() -> str:
        went_on.append(await asyncio.ensure_future(step()))  # the cancel is passed into it
        await asyncio.sleep(0)
        return "reply"

    async def leaves_while_the_step_waits() -> dict[str, Any]:
        await waiting.wait()
        return {"type": "http.disconnect"}

    async def handler() -> str:
        return await unless_disconnected(leaves_while_the_step_waits, work())

    with pytest.raises(ClientClosed):
        asyncio.run(handler())
    assert went_on == []


def test_work_that_ends_anyway_after_the_client_left_is_client_closed() -> None:
    """A cancel dropped in the work's own frames: the work's result is not the answer."""
    async def work() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        return "reply"

    async def handler() -> tuple[str, int]:
        try:
            return await unless_disconnected(left_at_once(), work()), 0
        except ClientClosed:
            task = asyncio.current_task()
            assert task is not None
            return "left", task.cancelling()

    assert asyncio.run(handler()) == ("left", 0)


def test_a_stream_made_after_the_client_left_is_closed() -> None:
    closed: list[bool] = []

    async def items() -> AsyncIterator[Any]:
        try:
            yield {"choices": []}
        finally:
            closed.append(True)

    async def work() -> Stream:
        chunks = items()
        await chunks.__anext__()  # opened: its upstream call is held
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        return Stream(chunks, cast(Any, None), Facts(stream=True, mode="buffer"),
                      lambda *_: None)

    async def handler() -> None:
        await unless_disconnected(left_at_once(), work())

    with pytest.raises(ClientClosed):
        asyncio.run(handler())
    assert closed == [True]


def test_a_handler_cancelled_by_others_stays_cancelled() -> None:
    async def never_leaves() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def handler() -> None:
        await unless_disconnected(never_leaves, asyncio.sleep(10))

    async def main() -> None:
        task = asyncio.ensure_future(handler())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_the_work_s_answer_when_the_client_stays() -> None:
    async def stays() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def work() -> str:
        await asyncio.sleep(0)
        return "reply"

    async def handler() -> str:
        return await unless_disconnected(stays, work())

    assert asyncio.run(handler()) == "reply"
