"""Server-sent events from an OpenAI-compatible upstream, read for the direct path.

Each event's JSON is parsed once (the gateway reads the text to check it) and its bytes are kept
with it: a ``RawChunk`` is the parsed chunk that remembers them, and ``proxy.sse`` sends those
bytes as they came while nothing has changed the chunk, so a pass-through stream is not encoded
again. Setting or removing a key forgets them (the chunk is then encoded like any other), and
an event whose JSON gives an object a key twice never keeps them: a client's parser may keep
the other of the two values than the one the gateway read and checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Self, cast

from proxy.errors import Redactor, UpstreamFailed
from proxy.fields import StreamLabels
from proxy.replies import ChatCompletionChunk
from proxy.sse_split import EventSplitter
from proxy.upstream import entered, upstream_event_json
from proxy.upstream_log import upstream_said


class RawChunk(dict[str, Any]):
    """A chunk as parsed from the upstream, with the JSON text it came as (``raw``) until the
    chunk is changed at the top level. Nested values are never changed by the gateway: it
    builds new chunks (``proxy.chunks.chunk_like``) instead."""

    __slots__ = ("raw",)

    def __init__(self, data: dict[str, Any], raw: bytes | None) -> None:
        super().__init__(data)
        self.raw = raw

    def __setitem__(self, key: str, value: Any) -> None:
        self.raw = None
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.raw = None
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self.raw = None
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self.raw = None
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.raw = None
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.raw = None
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self.raw = None
        super().clear()

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self.raw = None
        super().update(other)
        return self


def wire_bytes(chunk: ChatCompletionChunk) -> bytes | None:
    """The SSE event for a chunk relayed unchanged, or None when it must be encoded."""
    raw = chunk.raw if type(chunk) is RawChunk else None
    return b"data: " + raw + b"\n\n" if raw is not None else None


class SSEReader:
    """Splits an upstream's SSE byte stream into chunks; ``data: [DONE]`` ends it. The whole
    stream may carry at most ``max_bytes`` (a runaway upstream cannot fill the memory).

    A stream must give some choice a ``finish_reason`` before it ends (``[DONE]`` or the end of
    the body), as LiteLLM's Router requires: one without (cut short, or only ``choices: []``)
    is a 502 ``upstream_malformed``, not a 200 with a partial reply."""

    def __init__(self, model: str, max_bytes: int, redact: Redactor) -> None:
        self.model = model
        self.max_bytes = max_bytes
        self.redact = redact
        self.labels = StreamLabels()  # the stream's id, model...: its first chunk's throughout

    async def chunks(self, pieces: AsyncIterator[bytes]) -> AsyncIterator[ChatCompletionChunk]:
        finished = False
        events = self.events(pieces)
        try:
            async for chunk in events:
                if chunk is DONE:
                    await _drain(events)
                    break
                finished = finished or has_finish_reason(chunk)
                yield cast(ChatCompletionChunk, chunk)
        finally:
            await events.aclose()
        if not finished:
            raise UpstreamFailed(f"the stream from the upstream for model {self.model!r} ended "
                                 "before a finish_reason", code="upstream_malformed")

    async def events(self, pieces: AsyncIterator[bytes]) -> AsyncGenerator[RawChunk, None]:
        """Each event's chunk, or ``DONE``; comments and data-less events are skipped."""
        split = EventSplitter(self.model, MAX_EVENT_BYTES)
        total = 0
        async for piece in pieces:
            total += len(piece)
            if total > self.max_bytes:
                raise UpstreamFailed(
                    f"the stream from the upstream for model {self.model!r} is larger than "
                    f"upstream.max_response_bytes ({self.max_bytes})", code="upstream_too_large")
            for event in split.feed(piece):
                if (chunk := self.parse(event)) is not None:
                    yield chunk
        rest = split.rest()
        if rest.strip() and (chunk := self.parse(rest)) is not None:
            yield chunk  # the last event without its blank line

    def parse(self, event: bytes) -> RawChunk | None:
        """One event: its chunk, ``DONE``, or None for comments and data-less events."""
        lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            return None
        data = b"\n".join(line[1:] if line.startswith(b" ") else line for line in lines)
        if data.strip() == b"[DONE]":
            return DONE
        # NaN: refused, never relayed as it came; a key twice: encoded again from what was read
        parsed, unique = upstream_event_json(data, self.model)
        if not isinstance(parsed, dict):
            raise UpstreamFailed(f"the upstream for model {self.model!r} sent an event that is "
                                 "not a JSON object", code="upstream_malformed")
        if "error" in parsed and "choices" not in parsed:
            error = parsed["error"]
            message = error.get("message") if isinstance(error, dict) else error
            upstream_said(self.redact, self.model, "mid-stream", str(message))
            raise UpstreamFailed(f"the upstream for model {self.model!r} failed mid-stream",
                                 code="upstream_error")
        # relayed as its bytes unless entering changed it (then re-encoded, as checked)
        relayed = not entered(parsed, "delta", self.model, data, self.labels)
        complete = all("finish_reason" in c for c in parsed.get("choices") or ())
        as_came = len(lines) == 1 and complete and relayed and unique
        chunk = RawChunk(parsed, data if as_came else None)
        for choice in chunk.get("choices") or ():
            choice.setdefault("finish_reason", None)  # as LiteLLM's chunks always have it
        return chunk


MAX_EVENT_BYTES = 8 * 1024 * 1024
"""The largest single stream event (its text up to the blank line that ends it) the direct
path reads: past it the stream fails with a 502 ``upstream_too_large``. A chunk is a few
words, or a tool call's or an audio delta's piece: 8 MiB is far beyond any, and bounds what
one event holds and what its JSON costs to parse (the whole stream is bounded by
``upstream.max_response_bytes``)."""


async def _drain(events: AsyncIterator[RawChunk]) -> None:
    """Read the body to its end after ``[DONE]`` (an upstream ends it at once), so that the
    HTTP client puts the connection back in its pool: closed before the end, the connection is
    dropped and the next request opens a new one. Bounded by ``DRAIN_S``; nothing after
    ``[DONE]`` is part of the reply, so no failure here is the stream's."""
    try:
        async with asyncio.timeout(DRAIN_S):
            async for _ in events:
                pass
    except Exception:  # noqa: BLE001, S110 - past [DONE]: the reply is complete already
        pass


def has_finish_reason(chunk: RawChunk) -> bool:
    return any(c.get("finish_reason") for c in chunk.get("choices") or ())


DRAIN_S = 0.25
"""The longest wait for the end of a stream's body after its ``[DONE]``."""

DONE = RawChunk({}, None)
"""The end of the stream (``data: [DONE]``)."""
