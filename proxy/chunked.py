"""The stream modes that send while the upstream is still writing: chunked and monitor.

chunked: each choice's deltas are held; once ``window_tokens`` more tokens of readable text
(every text the client can read: ``proxy.chunks.readable_text``) have arrived, and the reply has
grown by ``WIDEN`` (half) since the last such check (so that the judge's work stays linear in
the reply: at most 3 times it in partial checks), the whole reply so far is checked, the same
way a plain reply is, and if it passes the held text is released up to the end of its last
complete sentence (or line) in every field (content, each tool call's arguments...; a tool
call's name ends none, so a tool call holds the rest of its choice to the end): the judge has
read every released sentence whole, and the sentence being written waits for the next check.
When the choice ends, the whole reply is checked: this last check *is* the plain-mode check, so
the final verdict is the plain verdict whatever the window size. A reply so far that is flagged
holds everything after it until that last check decides, so a window-only false positive costs
latency, not the reply. A choice with audio is held to its end the same way: the audio is
checked only through its transcript, and a partial check cannot vouch for audio that may run
ahead of the transcript. A stream holds at most ``proxy.chunks.MAX_HELD_CHUNKS`` chunks at once
(502 ``upstream_too_large``). With ``n > 1``, a choice whose last check failed open makes the
reply failed open (guard ``error``, as plain and buffer mode record it), unless a check stopped
a choice.

monitor: everything passes at once; at the end each choice's whole reply is checked and the
verdict reported in a last chunk (``choices: []``, a ``vilmo`` object). No protection. A stream
the client leaves is judged all the same, after it closed (``proxy.sse``), for the record.

Both yield, among the chunks, ``Judged`` facts: the reply's verdict so far, for the record,
so that a stream that ends early (its deadline, an upstream failure) records what judged the
text it sent: in chunked mode each choice's last check (a partial one until the choice ends);
in monitor mode the text already relayed is judged when the stream ends early.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from proxy.call import Call
from proxy.chunks import (
    ChoiceText,
    TextPath,
    by_choice,
    carries_unread,
    chunk_like,
    delta_of,
    held_within,
    refusal_chunks,
    tokens,
)
from proxy.errors import GuardFailed
from proxy.guard import Guard
from proxy.judged_text import unescaped
from proxy.outcome import (
    FAILED_OPEN,
    NOT_CHECKED,
    FailedOpen,
    Judged,
    Judgement,
    Unjudged,
)
from proxy.upstream import Chunk
from vilmo.policy import Policy
from vilmo.verdict import Verdict, rules_of, worst_of

HOLD_MARGIN = 0.1
"""A partial reply scoring within this of a stopping threshold is held like a flagged one: the
int8 judge's scores move by a few hundredths with what shares its batch, so a partial check
just under the line must not release text that the whole-reply check would stop. Holding
costs latency only; the whole-reply check at the end decides."""

_SENTENCE_END = re.compile(r"[.!?\n。！？][\"'”’)\]}]*[ \t]*$")
"""A sentence (or line) end, and what may close it: quotes, brackets, a JSON object's end."""
_TAIL_CHARS = 64
"""How much of a field's end is read for a sentence end: the longest escape is 12 characters."""
_TAIL_READ = 2 * _TAIL_CHARS + 2
"""How much of a field's end ``_ends_sentence`` is given (``ChoiceText.tail``): it reads at most
``2 * _TAIL_CHARS + 1`` characters back, so this reads as the whole field does."""
WIDEN = 0.5
"""A partial check runs only once the reply has grown by this share of its length at the last
one (and by ``window_tokens``): each partial check reads the whole reply so far, so checks every
``window_tokens`` judged a reply of n characters about n * n / (2 * window) times (12,000
characters as 435,000); widening, the partial checks read at most ``1 / WIDEN + 1`` times the
reply in all (a geometric series), the whole-reply check once more."""


def _ends_sentence(text: str) -> bool:
    """Whether a field's text so far ends a sentence, read as the judge reads it: decoded
    (``proxy.judged_text``: a JSON string's ``\\n`` or ``.\\"`` ends one, ``.\\`` may not).
    Only its tail is decoded, from the start of a run of backslashes so that each escape is
    read as the whole text reads it; a run longer than the tail is read as no end (a hold
    costs latency only)."""
    start = max(0, len(text) - _TAIL_CHARS)
    run = start
    while run and text[run - 1] == "\\":
        run -= 1
        if start - run > _TAIL_CHARS:
            return False
    return bool(_SENTENCE_END.search(unescaped(text[run:])))


@dataclass(slots=True)
class _Choice:
    """One choice of a chunked stream: its text so far and the chunks not yet released."""

    text: ChoiceText = field(default_factory=ChoiceText)
    held: list[Chunk] = field(default_factory=list)
    ends: list[bool] = field(default_factory=list)  # per held chunk: a sentence ends with it
    open_fields: set[TextPath] = field(default_factory=set)  # fields that end no sentence
    settled: bool = False  # a release may carry text: ``text.settled_text()``, the reply so
    # far up to its last sentence end (``ChoiceText.settle``)
    unchecked_tokens: int = 0
    checked_chars: int = 0  # the reply's length at its last partial check
    flagged: bool = False  # hold the rest until the end: the reply so far failed a check, or
    # the choice carries audio (whose words a partial check of its transcript cannot vouch for)
    released: bool = False
    done: bool = False
    stopped: Verdict | None = None  # a partial check's verdict that stops the reply so far

    def hold(self, piece: Chunk, added: list[tuple[TextPath, str]]) -> None:
        """Hold a chunk (its delta's texts ``added`` to ``text`` already). It ends a sentence
        only if every field of the choice so far does: a delta may extend several fields
        (content and a tool call's arguments), and a "." in one says nothing of a sentence
        still being written in another, which a release up to here would cut. Each field the
        delta extended is read again (its tail only), the others are as they were."""
        self.held.append(piece)
        for path in dict(added):
            if _ends_sentence(self.text.tail(path, _TAIL_READ)):
                self.open_fields.discard(path)
            else:
                self.open_fields.add(path)
        self.ends.append(not self.open_fields)
        if self.ends[-1] and self.text.length:
            self.text.settle()
            self.settled = True
        self.unchecked_tokens += sum(tokens(text) for _, text in added)

    def due(self, window_tokens: int) -> bool:
        """Whether a partial check is due: ``window_tokens`` more tokens, and the reply grown
        by ``WIDEN`` since its last partial check (``WIDEN``: the judge's work stays linear)."""
        return (self.unchecked_tokens >= window_tokens
                and self.text.length >= self.checked_chars * (1 + WIDEN))

    def release(self, whole: bool = True) -> list[Chunk]:
        """The held chunks (``whole=False``: up to the last sentence end); the rest stay."""
        cut = len(self.held) if whole else max(
            (i + 1 for i, ended in enumerate(self.ends) if ended), default=0)
        out, self.held, self.ends = self.held[:cut], self.held[cut:], self.ends[cut:]
        self.released = self.released or bool(out)
        return out


def _holds(verdict: Verdict, policy: Policy) -> bool:
    """Whether a partial reply must be held: it stops, or it comes near a stopping threshold."""
    if verdict.stops:
        return True
    rules = rules_of(policy)
    return any(score >= rules[value].threshold - HOLD_MARGIN
               for value, score in verdict.scores.items()
               if value in rules and rules[value].stops)


async def windowed(call: Call, chunks: AsyncIterator[Chunk], guard: Guard,
                   ) -> AsyncIterator[Chunk | Judged]:
    """Chunked mode: only text whose reply so far passed the check is released."""
    policy = call.policy
    choices: dict[int, _Choice] = {}
    verdicts: dict[int, Verdict] = {}  # each ended choice's whole-reply verdict
    partial: dict[int, Verdict] = {}  # each open choice's last partial verdict
    checked: dict[int, Verdict] = {}  # each ended choice's whole-reply check that ran
    unchecked: set[int] = set()  # the choices whose last check failed open (text went out)
    trailer: list[Chunk] = []  # usage: sent once every choice is decided
    template: Chunk = {}
    held = 0  # chunks held, of every choice and the trailer (``MAX_HELD_CHUNKS``)

    def so_far() -> Judged:
        """The reply's verdict so far: each choice's last check (the whole-reply one once it
        ended), each kept under its index when the reply has several choices (the audit
        trail pairs each choice's text with its own); none that ran, or a choice whose last
        check failed open (its text went out unchecked): failed open, as plain and buffer
        mode record a reply whose check failed open, unless a check stopped a choice (that
        choice got the refusal: the record keeps that verdict)."""
        known = {**partial, **verdicts}
        if not known or (unchecked and not any(v.stops for v in known.values())):
            return Judged(FAILED_OPEN)
        worst = worst_of(known)
        if len(choices) > 1 and not worst.choices:
            worst = replace(worst, choices=known)
        return Judged(worst)

    async def finish(index: int, choice: _Choice) -> list[Chunk | Judged]:
        """The whole-reply check, as in plain mode, then the held rest or the refusal. Each
        choice is checked alone (as it ends), but counted with the others (``counted``):
        one output check per reply, as in plain and buffer mode."""
        nonlocal held
        choice.done = True
        verdict = await guard.check(policy, [await call.checked(choice.text.text)], "output",
                                    counted=False)
        partial.pop(index, None)
        unchecked.discard(index)
        if isinstance(verdict, Verdict):
            checked[index] = verdict
        if isinstance(verdict, FailedOpen):
            if choice.stopped is None:  # the policy chose availability over the check
                unchecked.add(index)
                held -= len(choice.held)
                return [so_far(), *choice.release()]
            # a check that failed cannot vouch for text a partial check already stopped
            verdict = choice.stopped
        verdicts[index] = verdict
        judged = so_far()
        held -= len(choice.held)
        if not verdict.stops:
            return [judged, *choice.release()]
        choice.held, choice.ends = [], []
        text = ("\n" if choice.released else "") + policy.refusal
        return [judged, *refusal_chunks(template, text, with_role=not choice.released,
                                        index=index)]

    try:
        async for chunk in chunks:
            template = template or chunk
            if not chunk.get("choices"):
                trailer.append(chunk)
                held = held_within(held + 1)
            for index, piece in by_choice(chunk):
                choice = choices.setdefault(index, _Choice())
                if choice.done:
                    continue
                delta = delta_of(piece)
                choice.hold(piece, choice.text.add(delta))
                held = held_within(held + 1)
                choice.flagged = choice.flagged or carries_unread(delta)
                if piece["choices"][0].get("finish_reason"):
                    for out in await finish(index, choice):
                        yield out
                elif not choice.flagged and choice.due(policy.streaming.window_tokens):
                    # The check reads exactly what a release would carry (the reply up to its
                    # last sentence end), never a sentence still being written: read with a
                    # fragment of the next one, a violating sentence can be diluted and pass.
                    choice.unchecked_tokens = 0
                    if choice.settled:
                        choice.checked_chars = choice.text.length
                        verdict = await guard.check(
                            policy, [await call.checked(choice.text.settled_text())], "stream")
                        if isinstance(verdict, Verdict):
                            choice.flagged = _holds(verdict, policy)
                            choice.stopped = verdict if verdict.stops else None
                            partial[index] = verdict
                            unchecked.discard(index)
                        else:
                            partial.pop(index, None)
                            unchecked.add(index)
                        yield so_far()
                    if not choice.flagged:
                        for out in choice.release(whole=False):
                            held -= 1
                            yield out
        for index, choice in choices.items():  # the upstream ended without a finish_reason
            if not choice.done:
                for out in await finish(index, choice):
                    yield out
        for out in trailer:
            yield out
    finally:
        if checked:  # however the stream ended: the choices checked whole, as one reply
            guard.metrics.record_verdict(policy.name, "output", worst_of(checked))
        await chunks.aclose()  # type: ignore[attr-defined]


async def monitored(call: Call, chunks: AsyncIterator[Chunk], guard: Guard,
                    ) -> AsyncIterator[Chunk | Judged | Unjudged]:
    """Monitor mode: everything passes at once; the whole reply is checked at the end. First
    comes an ``Unjudged`` whose judge reads the text relayed so far: a client that leaves
    closes this generator, which then cannot yield, so its sender judges that text."""
    policy = call.policy
    choices: dict[int, ChoiceText] = {}
    template: Chunk = {}

    async def judged() -> Judgement:
        items = await call.checked_choices(
            {i: t.text for i, t in (choices or {0: ChoiceText()}).items()})
        try:
            return await guard.check_choices(policy, items, "output")
        except GuardFailed:  # monitor never holds or fails a stream; the failure is reported
            return FAILED_OPEN

    async def relayed() -> Judgement:
        """The judgement of the text relayed so far; none relayed: nothing to judge."""
        return await judged() if any(t.text for t in choices.values()) else NOT_CHECKED

    yield Unjudged(relayed)
    try:
        async for chunk in chunks:
            template = template or chunk
            for index, piece in by_choice(chunk):  # before it goes: the client may get it
                choices.setdefault(index, ChoiceText()).add(delta_of(piece))
            yield chunk
    except Exception:
        # Ended early (its deadline, an upstream failure): the text the client already got is
        # judged all the same, for the record (the check has its own timeout); then the error.
        if any(t.text for t in choices.values()):
            yield Judged(await judged())
        raise
    verdict = await judged()
    note: dict[str, object] = {"mode": "monitor",
                               "guard": "ok" if isinstance(verdict, Verdict) else "error"}
    if isinstance(verdict, Verdict):
        note.update(verdict.as_dict())
    yield Judged(verdict)
    yield {**chunk_like(template, None), "choices": [], "vilmo": note}
