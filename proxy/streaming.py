"""Streamed replies under the policy's streaming mode, as server-sent events.

    buffer   hold the whole reply, check it (regenerating if the policy says so), then send the
             approved chunks, or the refusal. Done in ``prepare``, before the headers go out,
             so the headers carry the verdict and a failed check is a plain HTTP error.
    chunked  hold each choice's deltas (every readable text: content, reasoning, refusal, call
             arguments); every ``window_tokens`` check the whole reply so far and release what
             is held if it passes. A choice's last check is the whole-reply check of plain mode,
             so the final verdict is the plain verdict: a flagged reply so far holds the rest
             until that check, whose violation ends the choice with the refusal and
             finish_reason "content_filter" (see ``proxy.chunked``).
    monitor  pass chunks at once, check the whole reply at the end, report that verdict in a
             last chunk (``choices: []`` and a ``vilmo`` object), metrics and audit. No
             protection.

Every choice (``n > 1``) is judged and acted on by itself. Nothing unchecked reaches the client
in buffer and chunked modes. Every stream ends with ``data: [DONE]``, after an error event if
something failed after the headers (``streaming.stream_timeout_s`` too). A client that goes
away cancels the task reading the upstream, and closing the iterator closes the upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from proxy.actions import enforce
from proxy.audit import RequestRecord, note_reply
from proxy.chunked import monitored, windowed
from proxy.chunks import by_choice, chunk_like, iterate, refusal_chunks, reply_of, usage_chunks
from proxy.errors import GatewayError, UpstreamFailed
from proxy.pipeline import ChatStream, escalate, open_timed_stream
from proxy.services import Services
from proxy.sse import DONE, error_event, event
from proxy.upstream import Chunk
from vilmo.verdict import Verdict

log = logging.getLogger(__name__)

CLIENT_CLOSED = "499"


@dataclass(slots=True)
class PreparedStream:
    stream: ChatStream
    mode: str
    verdict: Verdict | None = None
    guard: str = "off"
    regenerations: int = 0
    annotate: bool = False


async def prepare(stream: ChatStream, services: Services, record: RequestRecord,
                  annotate: bool = False) -> PreparedStream:
    """Decide the mode; in buffer mode, read and judge the whole reply now."""
    policy = stream.call.policy
    if stream.refused or not policy.checks.output:
        return PreparedStream(stream, "off", stream.input_verdict, "ok" if stream.refused
                              else "off", annotate=annotate)
    if policy.streaming.mode != "buffer":
        return PreparedStream(stream, policy.streaming.mode, guard="ok", annotate=annotate)

    async def judged(chunks: AsyncIterator[Chunk]) -> tuple[list[Chunk], Verdict | None]:
        try:
            held = [c async for c in chunks]
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        texts = {i: t.text for i, t in reply_of(held).items()}
        items = {i: stream.call.checked(t) for i, t in texts.items()}
        verdict = await services.guard.check_choices(policy, items, "output")
        usage = usage_chunks(held)
        note_reply(record, texts, verdict, usage[-1].get("usage") if usage else None)
        return held, verdict

    async def regenerate(previous: Verdict) -> tuple[list[Chunk], Verdict | None]:
        escalate(services, stream.call, record, previous)
        return await judged(await open_timed_stream(services.upstream, stream.call.params(),
                                                    stream.deadline))

    chunks, verdict = await judged(stream.chunks)
    chunks, verdict, regenerations = await enforce(
        chunks, verdict, policy, regenerate,
        lambda held, why: refused(held, why, policy.refusal))
    record.verdict = verdict.as_dict() if verdict else None
    return PreparedStream(replace(stream, chunks=iterate(chunks)), "buffer", verdict,
                          "ok" if verdict is not None else "error", regenerations, annotate)


async def sse_events(prepared: PreparedStream, services: Services, record: RequestRecord,
                     ) -> AsyncIterator[bytes]:
    status, code = "200", None
    chunks = prepared.stream.chunks
    try:
        if prepared.mode == "chunked":
            source = windowed(prepared.stream, services, record)
        elif prepared.mode == "monitor":
            source = monitored(prepared.stream, services, record)
        else:
            source = chunks
        async for chunk in source:
            yield event(chunk)
        if prepared.annotate and prepared.mode in ("buffer", "off") and prepared.verdict:
            note = {"mode": prepared.mode, "guard": prepared.guard,
                    "regenerations": prepared.regenerations, **prepared.verdict.as_dict()}
            yield event({**chunk_like({"id": record.request_id}, None), "vilmo": note})
    except GatewayError as exc:
        status, code = str(exc.status), exc.code
        yield error_event(exc)
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    except Exception as exc:  # an unmapped failure must still end the stream properly
        log.error("stream failed (request %s): %s: %s", record.request_id,
                  type(exc).__name__, exc)  # one line; the traceback only at debug level
        log.debug("traceback of the stream failure", exc_info=exc)
        failure = UpstreamFailed("the upstream stream failed", code="upstream_error")
        status, code = str(failure.status), failure.code
        yield error_event(failure)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
        services.record(record, status, code)
    yield DONE


def refused(held: list[Chunk], verdict: Verdict, refusal: str) -> list[Chunk]:
    """A buffered stream with each choice the verdict stops replaced by the refusal."""
    kept = [piece for chunk in held for i, piece in by_choice(chunk)
            if not verdict.stops_choice(i)]
    template = held[0] if held else {}
    stopped = [chunk for i in sorted(reply_of(held)) if verdict.stops_choice(i)
               for chunk in refusal_chunks(template, refusal, index=i)]
    return kept + stopped + usage_chunks(held)

