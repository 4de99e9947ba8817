"""What the pipeline's steps find, as values: the three results of a check, the facts of one
request (which the audit record is built from), and the two outcomes of ``pipeline.chat``.

    Judgement = NotChecked | FailedOpen | Verdict
        NotChecked   the policy does not check this text           (x-vilmo-guard: off)
        FailedOpen   the check failed and the policy fails open    (x-vilmo-guard: error)
        Verdict      the check ran                                 (x-vilmo-guard: ok)

    Reply    a plain reply, fully enforced and recorded
    Stream   a streamed reply: ``items`` yields chunks and, for chunked and monitor mode, the
             ``Judged`` facts found on the way (monitor: first an ``Unjudged``); buffer mode
             is already enforced
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from proxy.replies import ChatCompletion, ChatCompletionChunk
from vilmo.instruct.instructions import Instruction
from vilmo.verdict import Verdict

if TYPE_CHECKING:
    from proxy.call import Call

GuardState = Literal["ok", "error", "off"]
StreamMode = Literal["buffer", "chunked", "monitor", "off"]


@dataclass(frozen=True, slots=True)
class NotChecked:
    """The policy does not check this text."""


@dataclass(frozen=True, slots=True)
class FailedOpen:
    """The check could not run and the policy fails open: the text went out unchecked."""


NOT_CHECKED = NotChecked()
FAILED_OPEN = FailedOpen()
Judgement = NotChecked | FailedOpen | Verdict
FAILED_INSTRUCTION = Instruction("")
"""The instruction step failed and the policy fails open: nothing is injected, as with no
instruction, but this object (``is``, not ``==``) marks the request ``x-vilmo-guard: error``
and its audit record's ``guard`` so (``Facts.guard``)."""


def guard_of(judgement: Judgement) -> GuardState:
    if isinstance(judgement, Verdict):
        return "ok"
    return "error" if isinstance(judgement, FailedOpen) else "off"


def verdict_of(judgement: Judgement) -> Verdict | None:
    return judgement if isinstance(judgement, Verdict) else None


@dataclass(frozen=True, slots=True)
class Facts:
    """What the steps of one request found so far (immutable: each step makes a new one)."""

    model: str = ""
    stream: bool = False
    policy: str = ""
    profile: str | None = None
    """The value profile bound to the caller's key: the weights its compliance is scored by."""
    instruction: Instruction | None = None
    """The generated instruction (before any regeneration strengthened it)."""
    instruction_s: float = 0.0
    input: Judgement = NOT_CHECKED
    reply: Judgement = NOT_CHECKED
    attempts: tuple[Verdict, ...] = ()
    """Verdicts of replies that were regenerated, in order."""
    refused: bool = False
    """The input check stopped the request: the upstream was never called."""
    mode: StreamMode | None = None
    """How a streamed reply was checked (the policy's streaming mode; ``off`` unchecked);
    None for a plain reply."""

    @property
    def shown(self) -> Judgement:
        """The judgement the headers report: the input's for a refused request."""
        return self.input if self.refused else self.reply

    @property
    def instruction_failed(self) -> bool:
        """The instruction step failed open: the request went out without its instruction."""
        return self.instruction is FAILED_INSTRUCTION

    @property
    def guard(self) -> GuardState:
        """``x-vilmo-guard`` and the audit record's ``guard``: ``ok`` for a refused request,
        ``error`` when the instruction step or the reply's check failed open; ``ok`` when a
        regeneration failed (its reply, never made, is not checked, but the replies before it
        were judged: ``proxy.actions.enforce``; this said ``off``, a policy that checks none)."""
        if self.refused:
            return "ok"
        if self.instruction_failed:
            return "error"
        if self.attempts and isinstance(self.reply, NotChecked):
            return "ok"
        return guard_of(self.reply)


@dataclass(frozen=True, slots=True)
class Judged:
    """A stream's reply verdict so far (chunked, monitor), yielded among its chunks."""

    reply: Judgement


@dataclass(frozen=True, slots=True)
class Unjudged:
    """A monitor stream's text relayed so far, judged only at its end: ``judge`` judges it
    then, so that a stream the client leaves is recorded with a verdict too (``proxy.sse``).
    A later ``Judged`` supersedes it."""

    judge: Callable[[], Awaitable[Judgement]]


@dataclass(frozen=True, slots=True)
class Reply:
    completion: ChatCompletion
    call: Call
    facts: Facts

    @property
    def guard(self) -> GuardState:
        return self.facts.guard


Finish = Callable[[Judgement, str, str | None], None]
"""Records a stream when it ends: the reply's last judgement, the status, the error code."""


@dataclass(frozen=True, slots=True)
class Stream:
    items: AsyncIterator[ChatCompletionChunk | Judged | Unjudged]
    call: Call
    facts: Facts
    """Carries the stream's ``mode``: the one place it is kept, so the header
    (``x-vilmo-stream-mode``), the annotation and the audit record's ``stream_mode`` cannot
    disagree."""
    finish: Finish
    """Called once by whoever sends the stream (``proxy.sse``), however it ends."""

    def __post_init__(self) -> None:
        if self.facts.mode is None:
            raise ValueError("a stream's facts must say how it is checked (Facts.mode)")

    @property
    def mode(self) -> StreamMode:
        """How the reply is checked (``Facts.mode``)."""
        assert self.facts.mode is not None  # __post_init__
        return self.facts.mode

    @property
    def guard(self) -> GuardState:
        """Chunked and monitor streams are checked as they go (headers leave before)."""
        if self.mode in ("chunked", "monitor") and not self.facts.instruction_failed:
            return "ok"
        return self.facts.guard
