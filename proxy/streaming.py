"""Streamed replies under the policy's streaming mode, as server-sent events.

    buffer   hold the whole reply, check it (regenerating if the policy says so), then send the
             approved chunks, or the refusal. Done in ``prepare``, before the headers go out,
             so the headers carry the verdict and a failed check is a plain HTTP error.
    chunked  release text in windows of N tokens once the window, with M tokens of context
             before it, passed the check; a violation ends the stream with a refusal chunk and
             finish_reason "content_filter". Tool-call arguments are held until the call ends.
    monitor  pass chunks at once, check windows alongside, report the verdict in a last chunk
             (``choices: []`` and a ``vilmo`` object), metrics and audit. No protection.

Nothing unchecked reaches the client in buffer and chunked modes. Every stream ends with
``data: [DONE]``, after an error event if something failed after the headers. A client that
goes away cancels the task reading the upstream, and closing the iterator closes the upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from proxy.actions import enforce
from proxy.audit import RequestRecord
from proxy.chunks import (
    ReplyText,
    chunk_like,
    iterate,
    refusal_chunks,
    tokens,
    without_text,
)
from proxy.errors import GatewayError, UpstreamFailed
from proxy.pipeline import ChatStream, escalate
from proxy.services import Services
from proxy.sse import DONE, error_event, event
from proxy.upstream import Chunk, open_stream
from vilmo.policy import Policy
from vilmo.verdict import Verdict, decide, merge_max

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
        held = [c async for c in chunks]
        text = ReplyText.of(held).text
        return held, await services.guard.check(policy, [stream.call.checked(text)], "output")

    async def regenerate(previous: Verdict) -> tuple[list[Chunk], Verdict | None]:
        escalate(services, stream.call, record, previous)
        return await judged(await open_stream(services.upstream, stream.call.params()))

    chunks, verdict = await judged(stream.chunks)
    chunks, verdict, regenerations = await enforce(
        chunks, verdict, policy, regenerate,
        lambda held, why: refusal_chunks(held, policy.refusal))
    record.verdict = verdict.as_dict() if verdict else None
    return PreparedStream(replace(stream, chunks=iterate(chunks)), "buffer", verdict,
                          "ok" if verdict is not None else "error", regenerations, annotate)


async def sse_events(prepared: PreparedStream, services: Services, record: RequestRecord,
                     ) -> AsyncIterator[bytes]:
    status, code = "200", None
    chunks = prepared.stream.chunks
    try:
        if prepared.mode == "chunked":
            source = windowed(prepared, services, record)
        elif prepared.mode == "monitor":
            source = monitored(prepared, services, record)
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
    except Exception:  # an unmapped failure must still end the stream properly
        log.exception("stream failed (request %s)", record.request_id)
        failure = UpstreamFailed("the upstream stream failed", code="upstream_error")
        status, code = str(failure.status), failure.code
        yield error_event(failure)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
        services.record(record, status, code)
    yield DONE


async def windowed(prepared: PreparedStream, services: Services, record: RequestRecord,
                   ) -> AsyncIterator[Chunk]:
    """Chunked mode: only windows that passed the check are released."""
    call, policy = prepared.stream.call, prepared.stream.call.policy
    settings = policy.streaming
    reply, released, pending = ReplyText(), "", ""
    held: list[Chunk] = []  # tool-call chunks, released when the reply ends
    template: Chunk | None = None
    verdicts: list[Verdict] = []

    async def passes(window: str) -> bool:
        context = " ".join(released.split()[-settings.context_tokens:])
        verdict = await services.guard.check(policy, [call.checked(
            f"{context} {window}".strip())], "stream")
        if verdict is None:
            return True  # failed open: the policy chose availability over the check
        verdicts.append(verdict)
        return not verdict.stops

    async for chunk in prepared.stream.chunks:
        template = template or chunk
        text, has_tools, finished = reply.add(chunk)
        pending += text
        if has_tools:
            held.append(chunk)
        if tokens(pending) >= settings.window_tokens or (finished and (pending or held)):
            window = pending + ("\n" + reply.tool_text() if finished and held else "")
            if not await passes(window):
                _note(record, verdicts)
                for stop in refusal_chunks([template], "\n" + policy.refusal, with_role=False):
                    yield stop
                return
            if pending:
                yield chunk_like(template, {"content": pending})
            released, pending = released + pending, ""
            if finished:
                for tool_chunk in held:
                    yield tool_chunk
                held = []
        rest = without_text(chunk)  # role, finish_reason, usage: nothing to check
        if rest is not None:
            yield rest
    if pending or held:  # the upstream ended without a finish_reason
        if not await passes(pending + "\n" + reply.tool_text()):
            _note(record, verdicts)
            for stop in refusal_chunks([template or {}], "\n" + policy.refusal, with_role=False):
                yield stop
            return
        if pending:
            yield chunk_like(template or {}, {"content": pending})
        for tool_chunk in held:
            yield tool_chunk
    _note(record, verdicts)


async def monitored(prepared: PreparedStream, services: Services, record: RequestRecord,
                    ) -> AsyncIterator[Chunk]:
    """Monitor mode: everything passes at once; windows are checked alongside."""
    call, policy = prepared.stream.call, prepared.stream.call.policy
    reply, pending, template = ReplyText(), "", None
    checks: list[asyncio.Task[Verdict | None]] = []

    def check(window: str) -> None:
        checks.append(asyncio.create_task(services.guard.check(
            policy, [call.checked(window)], "stream")))

    try:
        async for chunk in prepared.stream.chunks:
            template = template or chunk
            yield chunk
            text, _, _ = reply.add(chunk)
            pending += text
            if tokens(pending) >= policy.streaming.window_tokens:
                check(pending)
                pending = ""
        if pending or reply.tool_text():
            check(pending + "\n" + reply.tool_text())
        results = await asyncio.gather(*checks, return_exceptions=True)
    finally:
        for task in checks:
            task.cancel()
    verdicts = [r for r in results if isinstance(r, Verdict)]
    failed = len(results) - len(verdicts)
    _note(record, verdicts)
    report = _merged(verdicts, policy)
    note: dict[str, object] = {"mode": "monitor", "guard": "error" if failed else "ok",
                               **report.as_dict()}
    yield {**chunk_like(template or {}, None), "choices": [], "vilmo": note}


def _merged(verdicts: list[Verdict], policy: Policy) -> Verdict:
    return decide(merge_max([dict(v.scores) for v in verdicts]), policy)


def _note(record: RequestRecord, verdicts: list[Verdict]) -> None:
    if verdicts:
        worst = max(verdicts, key=lambda v: (len(v.violations), max(v.scores.values(),
                                                                      default=0.0)))
        record.verdict = worst.as_dict()
