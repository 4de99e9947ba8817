"""What one request spent and what the upstream said: the request's ``Trace``.

A ``Trace`` lives in a context variable for the request (set by ``KeyAuth``), so the seams that
see the time and the texts add to it without being handed the request: ``TimedUpstream`` (every
upstream call's time, reply text and tokens, regenerations included, in order), the guard (the
checks' time, and the client's messages as the instruction step gets them, without vilmo's
instruction). The metrics read it when the request is recorded (latency per stage, tokens, the
gateway's overhead = total less upstream), the audit trail its texts (``proxy.trail``) and the
key limits its tokens (and what ``proxy.client_keys`` reserved of them at admission).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from proxy.chunks import ChoiceText, by_choice, delta_of, reply_texts
from proxy.off_loop import OFF_LOOP_CHARS
from proxy.token_estimate import estimated_tokens, least_estimate
from proxy.upstream import Chunk, Completion, Upstream
from vilmo.instruct.instructions import message_text

log = logging.getLogger(__name__)

TimedStage = Literal["upstream", "check"]


@dataclass(slots=True)
class Trace:
    upstream: float = 0.0
    """Seconds waiting for the upstream: whole replies, and streams until their first chunk."""
    check: float = 0.0
    """Seconds in value checks (input, reply, stream windows)."""
    prompt: list[dict[str, str]] = field(default_factory=list)
    """The client's messages (role, text), without vilmo's instruction."""
    replies: list[str] = field(default_factory=list)
    """Each upstream reply's text (the first choice), in order: the last is the final one."""
    choices: dict[int, dict[int, str]] = field(default_factory=dict)
    """Of a reply with several choices (``n > 1``; by its place in ``replies``), each
    choice's text by its index: the audit trail keeps each with its own verdict."""
    tokens: int = 0
    """``usage.total_tokens`` over every upstream call (streams always ask for it); a call
    that ended without usage (a stream its client left before the usage chunk, a call its
    client left, or that failed, before the upstream answered) counts the estimate of
    ``estimated_tokens`` (``charge_estimate``: a large call's in a worker thread, in
    ``counting`` until it is added): once a call is made, at least its messages are charged."""
    reserved: int = 0
    """Tokens held against the key's ``tpm`` at admission (``proxy.client_keys``), settled
    against ``tokens`` when the request is done."""
    reserved_at: int = 0
    """The second (of the store's window) the reservation was counted in."""
    more_held: list[tuple[int, int]] = field(default_factory=list)
    """Tokens held after admission, for a regeneration (``proxy.client_keys.hold_to_regenerate``),
    each (tokens, second): refunded with ``reserved`` when the request is settled."""
    counting: list[asyncio.Future[int]] = field(default_factory=list)
    """Estimates of calls that ended without usage still being counted in a worker thread
    (``charge_estimate``): each is added to ``tokens`` once counted, and the settle waits for
    them (``proxy.client_keys.Settlement``)."""


current_trace: ContextVar[Trace | None] = ContextVar("vilmo_trace", default=None)


def start_trace() -> Trace:
    """A fresh trace for the request running in this context."""
    trace = Trace()
    current_trace.set(trace)
    return trace


@contextmanager
def timed(stage: TimedStage) -> Iterator[None]:
    """Add the block's time to the request's trace (nothing outside a request)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        trace = current_trace.get()
        if trace is not None:
            setattr(trace, stage, getattr(trace, stage) + time.perf_counter() - started)


def note_prompt(messages: Sequence[Any]) -> None:
    """Keep the client's turns (text only; redacted and cut when stored)."""
    trace = current_trace.get()
    if trace is not None:
        trace.prompt = [{"role": str(m.get("role", "")), "content": message_text(m)}
                        for m in messages if isinstance(m, dict)]


def _note_reply(texts: dict[int, str], usage: object, params: Any,
                replies: Callable[[], list[str]]) -> asyncio.Future[int] | None:
    """Keep the reply's texts (by choice) and add its tokens: the usage's, else the estimate
    of the call (``charge_estimate``: leaving a stream before its usage chunk does not escape
    a key's ``tpm``)."""
    trace = current_trace.get()
    if trace is None:
        return None
    if len(texts) > 1:
        trace.choices[len(trace.replies)] = texts
    trace.replies.append(texts[min(texts)] if texts else "")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    if isinstance(total, int):
        trace.tokens += max(0, total)
        return None
    return charge_estimate(trace, params, replies())


def _note_unanswered(params: Any) -> asyncio.Future[int] | None:
    """A call made and left (cancelled, failed) before any reply came: the upstream read, and
    bills, its messages; they are charged (``charge_estimate``), and no reply is kept."""
    trace = current_trace.get()
    return charge_estimate(trace, params, ()) if trace is not None else None


def charge_estimate(trace: Trace, params: Any, replies: Sequence[str],
                    ) -> asyncio.Future[int] | None:
    """Add a call's estimate (``estimated_tokens`` of its messages and ``replies``) to the
    trace: counted at once up to ``OFF_LOOP_CHARS`` characters; past them in a worker thread
    (4 MB held the event loop 0.5 s), the job returned, and its count added when done. Nothing
    here awaits: a call ending by its client leaving (its task cancelled, perhaps again at each
    wait) starts the count all the same, and the settle waits for it (``Trace.counting``)."""
    chars = least_estimate(params)[1] + sum(map(len, replies))
    if chars <= OFF_LOOP_CHARS:
        trace.tokens += estimated_tokens(params, replies)
        return None
    job = asyncio.get_running_loop().run_in_executor(None, estimated_tokens, params,
                                                     tuple(replies))
    trace.counting.append(job)
    job.add_done_callback(partial(_counted, trace))
    return job


def _counted(trace: Trace, job: asyncio.Future[int]) -> None:
    """A count from a worker thread, added on the event loop (before anyone waiting for it
    resumes: its callbacks run in the order they were added)."""
    trace.counting.remove(job)
    if job.cancelled():
        return
    if (error := job.exception()) is not None:
        log.error("estimating a call's tokens failed: %s: %s", type(error).__name__, error)
        return
    trace.tokens += job.result()


async def _counted_now(job: asyncio.Future[int] | None) -> None:
    """Wait for a count started by ``charge_estimate`` (shielded: a cancelled wait leaves it
    to finish, and to be added, on its own)."""
    if job is not None:
        await asyncio.shield(job)


class TimedUpstream:
    """An ``Upstream`` whose calls are timed, and whose replies are kept, in the trace."""

    def __init__(self, inner: Upstream) -> None:
        self.inner = inner

    def serves(self, model: str) -> bool:
        return self.inner.serves(model)

    def model_names(self) -> list[str]:
        return self.inner.model_names()

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    async def complete(self, params: Any) -> Completion:
        try:
            with timed("upstream"):
                completion = await self.inner.complete(params)
        except BaseException:  # the client left (cancelled) or the call failed: still billed
            await _counted_now(_note_unanswered(params))
            raise
        texts = reply_texts(completion)
        await _counted_now(_note_reply(texts, completion.get("usage"), params,
                                       lambda: list(texts.values())))
        return completion

    async def stream(self, params: Any) -> AsyncIterator[Chunk]:
        chunks = self.inner.stream(params)
        choices: dict[int, ChoiceText] = {}
        usage: object = None
        try:
            with timed("upstream"):
                first = await anext(chunks, None)
            if first is None:
                return
            chunk: Chunk = first
            while True:
                for index, piece in by_choice(chunk):
                    choices.setdefault(index, ChoiceText()).add(delta_of(piece))
                usage = chunk.get("usage") or usage
                yield chunk
                following = await anext(chunks, None)
                if following is None:
                    break
                chunk = following
        finally:  # the call was made once this body runs: it is charged however it ended
            try:
                await chunks.aclose()  # type: ignore[attr-defined]
            finally:
                if choices or usage:
                    job = _note_reply({i: c.text for i, c in sorted(choices.items())}, usage,
                                      params, lambda: [c.text for c in choices.values()])
                else:
                    job = _note_unanswered(params)
                await _counted_now(job)
