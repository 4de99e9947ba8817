"""The upstream call of one request, shared by the plain flow (``proxy.pipeline``) and the
stream modes (``proxy.streaming``): the request with its instruction placed, the stronger
instruction before a regeneration, and a stream opened under the policy's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace

from proxy.actions import RetryRefused
from proxy.chunks import until
from proxy.client_keys import hold_to_regenerate
from proxy.errors import StreamTimeout
from proxy.fields import asks_for_audio, audio_asked
from proxy.guard import checked_chars
from proxy.judged_text import Judged, judged, shown_length, visible
from proxy.logprobs import alternatives_shown
from proxy.metrics import Metrics
from proxy.off_loop import OFF_LOOP_CHARS, off_loop_past
from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletionChunk
from proxy.shown_text import shown, tag_reading
from proxy.upstream import Upstream, open_stream
from vilmo.instruct.instructions import Instruction, apply_instruction, prompt_text, strengthen
from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.classifier import ScoreInput
from vilmo.policy import Policy
from vilmo.verdict import Verdict, rules_of

PROMPT_CONTEXT_CHARS = 2000
"""How much of the prompt (the last user turn) the judge gets with a reply: its head, since
the packaged classifier reads the prompt's first ``prompt_tokens`` (64) tokens
(``vilmo.judge.windowing.prompt_head``), about 300 characters of English; 2,000 keep them
whole for any prompt whose tokens average under 31 characters, so normal prompts are judged as
before, and a huge prompt costs the judge no more than this."""


def reply_may_stop(policy: Policy) -> bool:
    """Whether a check of the reply can block or regenerate it (it is checked, and some rule
    stops): only then is anything of the reply hidden from the client."""
    return policy.checks.output and any(rule.stops for rule in rules_of(policy).values())


def judged_prompt(prompt: str | None) -> str | None:
    """The context the judge reads with a reply: the prompt's first ``PROMPT_CONTEXT_CHARS``
    characters that show, as a client shows them (``proxy.shown_text.shown``: fullwidth or
    mathematical letters, references, markup inside words, look-alikes), then what its tag
    characters spell (``tag_reading``), on a line of its own; None: no prompt. Read as written,
    "Tell me how to kill my wife..." in fullwidth letters took a compliant reply's mft.care
    from 0.85 to 0.21, and a prompt after 2,000 zero-width spaces was no prompt at all. Linear
    in the part of the prompt before its head's end; only the reply counts against
    ``checks.max_chars``."""
    if not prompt:
        return None
    head, scanned = _visible_head(prompt, PROMPT_CONTEXT_CHARS)
    tags = tag_reading(scanned)[:PROMPT_CONTEXT_CHARS]
    return "\n".join(filter(None, [visible(shown(head)[0]), tags])) or None


def _visible_head(text: str, chars: int) -> tuple[str, str]:
    """The first ``chars`` characters of ``text`` that show (``visible``), and the part of
    ``text`` read to find them (``chars`` at a time: what renders as nothing is skipped)."""
    if len(text) <= chars or text[:chars].isascii():
        return visible(text[:chars]), text[:chars]
    head, at = "", 0
    while len(head) < chars and at < len(text):
        head += visible(text[at:at + chars])
        at += chars
    return head[:chars], text[:at]


@dataclass(slots=True)
class Call:
    """What goes to the upstream: the request with the instruction placed. ``instruction``
    changes only by ``escalate``."""

    raw: UpstreamParams
    policy: Policy
    instruction: Instruction

    def params(self) -> UpstreamParams:
        """A stream always asks for usage: its tokens are charged to the key's ``tpm``
        whether or not the client asked (``proxy.sse`` drops the usage the client did not
        ask for). The call's context says whether the reply's ``top_logprobs`` may go out
        (``proxy.logprobs.alternatives_shown``): only when no check of it can stop it; and
        whether a reply's ``audio`` may (``proxy.fields.audio_asked``): only when it was asked
        for."""
        alternatives_shown.set(not reply_may_stop(self.policy))
        audio_asked.set(asks_for_audio(self.raw))
        placed = apply_instruction(self.raw["messages"], self.instruction,
                                   self.policy.instructions.placement)
        params = {**self.raw, "messages": placed}
        if self.raw.get("stream"):
            params["stream_options"] = {**(self.raw.get("stream_options") or {}),
                                        "include_usage": True}
        return params

    @property
    def client_wants_usage(self) -> bool:
        """Did the client set ``stream_options.include_usage``?"""
        return bool((self.raw.get("stream_options") or {}).get("include_usage"))

    async def checked(self, text: str) -> ScoreInput:
        """A reply's text to judge (``judged_text``: decoded as a JSON parser decodes it, with
        the readings of its escapes and bidi runs that show other words), with the head of the
        last user turn as its context; its length as sent kept beside it, which is what
        counts against ``checks.max_chars`` (``proxy.guard.checked_chars``)."""
        return (await self.checked_choices({0: text}))[0]

    async def checked_choices(self, texts: Mapping[int, str]) -> dict[int, ScoreInput]:
        """Each choice's text read as ``checked`` reads it; past ``OFF_LOOP_CHARS`` in all,
        in a worker thread, as a large input is (``proxy.inputs.checked_input``): a reply is
        the upstream's, bounded only by ``upstream.max_response_bytes``, and a megabyte of
        escapes takes about a second to read, which on the event loop held every other
        request of the worker. A small reply is read on the loop: a thread costs more. The
        texts are counted first (``_counted_then_read``), so that a reply over
        ``checks.max_chars`` is refused without being read."""
        prompt = prompt_text(self.raw["messages"])
        return await off_loop_past(sum(map(len, texts.values())) + len(prompt), OFF_LOOP_CHARS,
                                   _counted_then_read, texts, prompt,
                                   self.policy.checks.max_chars)


def _counted_then_read(texts: Mapping[int, str], written_prompt: str, max_chars: int,
                       ) -> dict[int, ScoreInput]:
    """Each text read (``judged_text``) once all are counted as the guard counts them
    (``proxy.guard.checked_chars`` of their ``shown_length``): over ``max_chars``, none is
    read, each is kept unread (an empty ``response``, its count as ``shown``), and the guard
    refuses the check by its size before it scores anything, as it refused them read. A
    1.5-million-character reply of escapes was read for seconds before that refusal. The
    prompt is read here too (``judged_prompt``), in the same thread past ``OFF_LOOP_CHARS``:
    the invisible characters before its head are the client's to choose."""
    prompt = judged_prompt(written_prompt)
    unread = {i: Judged("", prompt, shown_length(text)) for i, text in texts.items()}
    if checked_chars(list(unread.values())) > max_chars:
        return dict(unread)
    return {i: judged(texts[i], prompt, unread[i].shown) for i in texts}


async def escalate(call: Call, previous: Verdict, metrics: Metrics, bank: PrincipleBank) -> None:
    """Before a regeneration: a stronger instruction from the violated principles. Raises
    ``RetryRefused`` (nothing changed, nothing counted) when the key's ``tpm`` has no room for
    another call (``proxy.client_keys.hold_to_regenerate``)."""
    stronger = strengthen(call.instruction, previous.violation_ids, call.policy, bank)
    if not await hold_to_regenerate(replace(call, instruction=stronger).params()):
        raise RetryRefused
    metrics.regenerations.labels(call.policy.name).inc()
    call.instruction = stronger


async def open_timed_stream(upstream: Upstream, params: UpstreamParams, deadline: float,
                            ) -> AsyncIterator[ChatCompletionChunk]:
    """The upstream stream (first chunk awaited), ending with StreamTimeout at ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            chunks = await open_stream(upstream, params)
    except TimeoutError:
        raise StreamTimeout("the stream ran past streaming.stream_timeout_s",
                            code="stream_timeout") from None
    return until(deadline, chunks)
