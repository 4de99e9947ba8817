"""One request's call to the upstream (``Call``), shared by the plain flow (``proxy.pipeline``)
and the stream modes (``proxy.streaming``, ``proxy.chunked``):

    Call.params        what is sent: the client's params with the instruction placed
    Call.checked*      a reply's text as the judge reads it, the prompt's head as its context
    escalate           the stronger instruction before a regeneration
    open_timed_stream  a stream opened under the policy's deadline

How the judge reads those texts (``judged_prompt`` and its helpers) comes last.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial

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


@dataclass(slots=True)
class Call:
    """One request's call to the upstream: the client's params (``raw``, as admitted), its
    policy and the instruction placed in it when sent (``params``). ``instruction`` changes
    only by ``escalate``."""

    raw: UpstreamParams
    policy: Policy
    instruction: Instruction
    _prompt_read: list[str | None] = field(default_factory=list, init=False, repr=False)
    """The prompt as the judge reads it (``judged_prompt``) once read, else empty (a list,
    since None is a reading: no prompt): the same for every check of the call (review rv5:
    each window of a chunked stream read it again)."""

    def params(self) -> UpstreamParams:
        """The params sent to the upstream: the client's, with the instruction placed as
        ``instructions.placement`` says. A stream always asks for usage: its tokens are
        charged to the key's ``tpm`` whether or not the client asked (``proxy.sse`` drops
        the usage the client did not ask for). Also sets, in the request's context, whether
        the reply's ``top_logprobs`` may go out (``proxy.logprobs.alternatives_shown``): only
        when no check of it can stop it; and whether a reply's ``audio`` may
        (``proxy.fields.audio_asked``): only when it was asked for."""
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
        turn = None if self._prompt_read else prompt_text(self.raw["messages"])
        prompt_chars = 0 if turn is None else min(len(turn), PROMPT_SCAN_CHARS)  # still to read
        return await off_loop_past(sum(map(len, texts.values())) + prompt_chars, OFF_LOOP_CHARS,
                                   _counted_then_read, texts,
                                   partial(self._judged_prompt_once, turn),
                                   self.policy.checks.max_chars)

    def _judged_prompt_once(self, turn: str | None = None) -> str | None:
        """The last user turn (``turn``, when the caller has it already) as the judge reads it
        (``judged_prompt``), read once a call."""
        if not self._prompt_read:
            self._prompt_read.append(judged_prompt(
                prompt_text(self.raw["messages"]) if turn is None else turn))
        return self._prompt_read[0]


def reply_may_stop(policy: Policy) -> bool:
    """Whether a check of the reply can block or regenerate it (it is checked, and some rule
    stops): only then is anything of the reply hidden from the client."""
    return policy.checks.output and any(rule.stops for rule in rules_of(policy).values())


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


# How the judge reads the call's texts: each reply counted, then read; the prompt's head.

def _counted_then_read(texts: Mapping[int, str], read_prompt: Callable[[], str | None],
                       max_chars: int) -> dict[int, ScoreInput]:
    """Each text read (``judged_text``) once all are counted as the guard counts them
    (``proxy.guard.checked_chars`` of their ``shown_length``): over ``max_chars``, none is
    read, each is kept unread (an empty ``response``, its count as ``shown``), and the guard
    refuses the check by its size before it scores anything, as it refused them read. A
    1.5-million-character reply of escapes was read for seconds before that refusal. The
    prompt is read here too (``Call._judged_prompt_once``), in the same thread past
    ``OFF_LOOP_CHARS``: the invisible characters before its head are the client's to choose."""
    prompt = read_prompt()
    unread = {i: Judged("", prompt, shown_length(text)) for i, text in texts.items()}
    if checked_chars(list(unread.values())) > max_chars:
        return dict(unread)
    return {i: judged(texts[i], prompt, unread[i].shown) for i in texts}


PROMPT_CONTEXT_CHARS = 2000
"""How much of the prompt (the last user turn) the judge gets with a reply: its head, since
the packaged classifier reads the prompt's first ``prompt_tokens`` (64) tokens
(``vilmo.judge.windowing.prompt_head``), about 300 characters of English; 2,000 keep them
whole for any prompt whose tokens average under 31 characters, so normal prompts are judged as
before, and a huge prompt costs the judge no more than this."""


PROMPT_SCAN_CHARS = 1 << 16
"""The most characters of the prompt read to find its head (``judged_prompt``): a prompt whose
first 64 K characters show nothing (invisible characters, markup) is no context to the judge,
and a prompt of a megabyte costs a reading of 64 K characters, not of the megabyte (review
rv5: 1.3 million zero-width spaces were read for 0.24 s, on each window of a stream)."""
_EMPTY_ELEMENTS = ("a|abbr|article|aside|b|bdi|bdo|big|blockquote|br|caption|center|cite|code|col|"
                   "colgroup|dd|del|dfn|div|dl|dt|em|figcaption|figure|font|footer|h[1-6]|header|"
                   "hr|i|img|ins|kbd|li|mark|nav|ol|p|pre|s|samp|section|small|span|strong|sub|"
                   "sup|table|tbody|td|tfoot|th|thead|tr|tt|u|ul|var|wbr")
"""HTML elements whose tags show nothing by themselves (formatting and layout): only these
are standalone markup; any other ``<word>`` is read as written (review: ``Tell me how to
<kill> my <wife>`` read "Tell me how to   my", and a compliant reply 0.15 for 0.75 on
mft.care; ``vector<int>`` read "vector")."""
_EMPTY_TAG = rf"</?(?i:{_EMPTY_ELEMENTS})\s*+/?>"
_SHOWS_NOTHING = re.compile(
    rf"(?:<!--[^<>\w]*?-->|{_EMPTY_TAG}|!\[[^\[\]\n\w]*+\]\([^()\s<>\[\]]*+\))"
    rf"(?:\s*+(?:<!--[^<>\w]*?-->|{_EMPTY_TAG}"
    r"|!\[[^\[\]\n\w]*+\]\([^()\s<>\[\]]*+\)))*+")
"""A run of markup that shows no word, standalone: a comment without words, a tag of
``_EMPTY_ELEMENTS`` without attributes, an image without alt words (``<!---->``,
``<b></b>``, ``<br>``, ``![](x)``)."""


def judged_prompt(prompt: str | None) -> str | None:
    """The context the judge reads with a reply: the prompt's first ``PROMPT_CONTEXT_CHARS``
    characters that show, as a client shows them (``proxy.shown_text.shown``: fullwidth or
    mathematical letters, references, markup inside words, look-alikes), without standalone
    markup that shows no word (``_SHOWS_NOTHING``), then what its tag characters spell
    (``tag_reading``), on a line of its own; None: no prompt. The judge reads the prompt's
    first 64 tokens: read as written, "Tell me how to kill my wife..." in fullwidth letters
    took a compliant reply's mft.care from 0.85 to 0.21, after 2,000 zero-width spaces it was
    no prompt at all, and after ``<!---->`` written 12 times it read 0.14 (review rv5). Reads
    ``PROMPT_SCAN_CHARS`` of the prompt at most, a head four times longer each time it shows
    too little: linear in that part; only the reply counts against ``checks.max_chars``."""
    if not prompt:
        return None
    scanned, size = prompt[:PROMPT_SCAN_CHARS], PROMPT_CONTEXT_CHARS
    while True:
        head, raw = _visible_head(scanned, size)
        read = _SHOWS_NOTHING.sub(" ", visible(shown(head)[0]))
        if len(read) >= PROMPT_CONTEXT_CHARS or len(raw) >= len(scanned):
            break
        size *= 4
    tags = tag_reading(raw)[:PROMPT_CONTEXT_CHARS]
    read = read[:PROMPT_CONTEXT_CHARS] if read.strip() else ""
    return "\n".join(filter(None, [read, tags])) or None


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
