"""Streamed replies under the policy's streaming mode.

    buffer   hold the whole reply, check it (regenerating if the policy says so), then send the
             approved chunks, or the refusal. Done by ``buffered`` before the headers go out,
             so the headers carry the verdict and a failed check is a plain HTTP error.
    chunked  hold each choice's deltas (every readable text: content, reasoning, refusal, call
             arguments); every ``window_tokens`` (widening with the reply: ``chunked.WIDEN``) check
             the whole reply so far and release what is held if it passes. A choice's last check is
             the whole-reply check of plain mode, so the final verdict is the plain verdict: a
             flagged reply so far holds the rest until that check, whose violation ends the choice
             with the refusal and finish_reason "content_filter" (see ``proxy.chunked``).
    monitor  pass chunks at once, check the whole reply at the end, report that verdict in a
             last chunk (``choices: []`` and a ``vilmo`` object), metrics and audit. No
             protection.

Every choice (``n > 1``) is judged and acted on by itself. Nothing unchecked reaches the client
in buffer and chunked modes. ``live`` is lazy: it reads the upstream only as the client reads,
and closing it closes the upstream. The SSE encoding (errors after the headers, ``[DONE]``) is
``proxy.sse``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from proxy.actions import Noted, enforce
from proxy.call import Call, escalate, open_timed_stream
from proxy.chunked import monitored, windowed
from proxy.chunks import by_choice, held_reply, refusal_chunks, reply_of, usage_chunks
from proxy.outcome import Judged, Judgement, StreamMode, Unjudged
from proxy.services import Services
from proxy.upstream import Chunk
from vilmo.verdict import Verdict


async def buffered(call: Call, chunks: AsyncIterator[Chunk], services: Services, deadline: float,
                   noted: Noted) -> tuple[list[Chunk], Judgement, tuple[Verdict, ...]]:
    """Buffer mode: the whole reply read, judged and enforced (regenerated, refused) now; each
    verdict and attempt ``noted`` as it comes (``actions.enforce``)."""
    policy = call.policy

    async def held_and_judged(chunks: AsyncIterator[Chunk]) -> tuple[list[Chunk], Judgement]:
        held, choices = await held_reply(chunks, policy.checks.max_chars)
        items = await call.checked_choices({i: t.text for i, t in choices.items()})
        return held, await services.guard.check_choices(policy, items, "output")

    async def regenerate(previous: Verdict) -> tuple[list[Chunk], Judgement]:
        await escalate(call, previous, services.metrics, services.bank)
        retried = await open_timed_stream(services.upstream, call.params(), deadline)
        return await held_and_judged(retried)

    held, verdict = await held_and_judged(chunks)
    return await enforce(held, verdict, policy, regenerate,
                         lambda held, why: refused(held, why, policy.refusal), noted)


async def live(call: Call, chunks: AsyncIterator[Chunk], services: Services, mode: StreamMode,
               ) -> AsyncIterator[Chunk | Judged | Unjudged]:
    """Chunked and monitor mode (``off``: the chunks as they come), read as the client reads."""
    source: AsyncIterator[Chunk | Judged | Unjudged]
    if mode == "chunked":
        source = windowed(call, chunks, services.guard)
    elif mode == "monitor":
        source = monitored(call, chunks, services.guard)
    else:
        source = chunks
    try:
        async for item in source:
            yield item
    finally:
        await source.aclose()  # type: ignore[attr-defined]
        await chunks.aclose()  # type: ignore[attr-defined]


def refused(held: list[Chunk], verdict: Verdict, refusal: str) -> list[Chunk]:
    """A buffered stream with each choice the verdict stops replaced by the refusal."""
    kept = [piece for chunk in held for i, piece in by_choice(chunk)
            if not verdict.stops_choice(i)]
    template = held[0] if held else {}
    stopped = [chunk for i in sorted(reply_of(held)) if verdict.stops_choice(i)
               for chunk in refusal_chunks(template, refusal, index=i)]
    return kept + stopped + usage_chunks(held)
