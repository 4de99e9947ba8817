"""A stream whose client left while it was being opened closes its upstream stream at once.

Review mr3 (item 3): when the work of a client that left ends anyway with a live stream
(chunked, monitor or off mode: ``proxy.pipeline.stream_reply`` returns ``live(...)``, an async
generator not started yet), ``proxy.disconnect.unless_disconnected`` closed it with
``aclose()``; a generator closed before it started never runs its ``finally``, so the
upstream stream ``open_timed_stream`` had opened stayed open until the garbage collector's
finalizer found it. The upstream here swallows the cancellation while it opens (as a client
library may), so the handler ends with its stream after its client left, deterministically.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from fakes import FakeUpstream, MemoryAudit, app_with, fake_services

from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletionChunk
from vilmo.instruct.principles import PrincipleBank


class CancelSwallowingUpstream(FakeUpstream):
    """Its stream's first chunk waits until the client has left (``opening``, then a waiter
    only the cancellation ends), and the cancellation is swallowed: the stream opens anyway."""

    def __init__(self) -> None:
        super().__init__()
        self.opening = asyncio.Event()
        self.closed = 0
        """Streams ended (closed, or read to their end)."""

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        inner = super().stream(params)
        try:
            self.opening.set()
            try:
                await asyncio.get_running_loop().create_future()  # only the cancel ends it
            except asyncio.CancelledError:
                pass  # swallowed: the stream opens anyway
            async for chunk in inner:
                yield chunk
        finally:
            self.closed += 1
            await inner.aclose()  # type: ignore[attr-defined]


async def post_and_leave_while_opening(app: Any, upstream: CancelSwallowingUpstream,
                                       policy: str, sent: list[dict[str, Any]]) -> None:
    body = json.dumps({"model": "stub", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await upstream.opening.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "http_version": "1.1",
             "scheme": "http", "root_path": "", "server": ("gateway", 80),
             "client": ("client", 1), "app": app,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"x-vilmo-policy", policy.encode())]}
    await app(scope, receive, send)


@pytest.mark.parametrize("policy", ["g-leave-chunked", "g-block-monitor", "g-block-buffer"])
def test_the_upstream_stream_is_closed_when_the_client_left_while_it_opened(
        policy_dir: Path, bank: PrincipleBank, policy: str) -> None:
    upstream = CancelSwallowingUpstream()
    services = fake_services(policy_dir, bank, upstream)
    app = app_with(services)
    closed_when_answered: list[int] = []

    async def main() -> None:
        await post_and_leave_while_opening(app, upstream, policy, [])
        closed_when_answered.append(upstream.closed)  # before any GC or shutdown

    asyncio.run(asyncio.wait_for(main(), 10))
    audit = cast(MemoryAudit, services.audit)
    assert len(upstream.calls) == 1  # the stream was opened
    assert closed_when_answered == [1]
    assert [(r.status, r.error_code) for r in audit.records] == [("499", "client_closed")]
