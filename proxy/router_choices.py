"""Every choice of an ``n > 1`` stream from LiteLLM's Router ended as the direct path ends it.

LiteLLM's stream wrapper (1.110) drops each later choice's first chunk when its text is empty
(the chunk with its ``role``) and passes on one ``finish_reason`` only, choice 0's, on the
chunk where it comes: the other choices may still be sending (their own reasons are lost
inside LiteLLM). Choice 1 of ``n: 2`` came without ``role`` and without ``finish_reason``, and
the openai client's stream helper built it with neither. ``ChoiceEnds`` gives each choice
``role: assistant`` on its first delta when it has none, and gives a ``finish_reason`` only at
the end of the stream (before a usage chunk, or after the last chunk) to each choice seen that
has none: never mid-stream, where a choice given a reason would be read as finished and its
later text never judged. The reason given is the stream's (LiteLLM's one), except that only a
choice that sent tool calls ends with ``tool_calls`` and one that did ends so when the stream
says ``stop``; a choice of text alone that LiteLLM ends with ``tool_calls`` (its rewrite of
the upstream's ``stop`` when another choice called tools) ends with ``stop``, as on the direct
path (review mr9). Indexes ``>= n`` (the request's) are not tracked, so the cost is bounded by
``n``. A stream with no reason at all is LiteLLM's own 502 (``proxy.errors.STREAM_CUT_SHORT``).
"""

from __future__ import annotations

from typing import Any

ROLE = "assistant"
TOOL_REASONS = frozenset({"tool_calls", "function_call"})
HEAD_FIELDS = ("id", "object", "created", "model", "system_fingerprint")
"""A chunk's fields an ending chunk copies from the last chunk seen."""


class ChoiceEnds:
    """One Router stream's choices: which have had a delta, which sent tool calls, which have
    finished, and whether the stream's end was given."""

    __slots__ = ("closed", "finished", "head", "n", "reason", "seen")

    def __init__(self, n: int | None = None) -> None:
        self.n = n if isinstance(n, int) and n > 0 else 1
        """Choice indexes below it are tracked (the request's ``n``)."""
        self.seen: dict[int, bool] = {}
        """Choice indexes in the order their first delta came: whether each sent tool calls."""
        self.finished: set[int] = set()
        self.reason: str | None = None
        """The stream's finish_reason, once a choice has one."""
        self.head: dict[str, Any] = {}
        self.closed = False

    def note(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to send for ``chunk``: ``chunk`` itself (a choice's first delta given its
        role, in place), after an ending chunk when it is a usage chunk without choices."""
        self.head = {k: chunk[k] for k in HEAD_FIELDS if k in chunk}
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            choices = []
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("index"), int):
                continue
            index = choice["index"]
            if not 0 <= index < self.n or self.closed:
                continue
            delta = choice.get("delta")
            if index not in self.seen:
                self.seen[index] = False
                if isinstance(delta, dict) and "role" not in delta:
                    choice["delta"] = delta = {"role": ROLE, **delta}
            if isinstance(delta, dict) and (delta.get("tool_calls") or delta.get("function_call")):
                self.seen[index] = True
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                if reason in TOOL_REASONS and not self.seen[index]:
                    choice["finish_reason"] = "stop"  # LiteLLM's, for a choice of text alone
                self.finished.add(index)
                self.reason = self.reason or reason
        if chunk.get("usage") is None or self.closed:
            return [chunk]
        if not choices:  # the usage chunk: the stream's last, after every finish
            ending = self.ending()
            return [chunk] if ending is None else [ending, chunk]
        self._close(choices)
        return [chunk]

    def ending(self) -> dict[str, Any] | None:
        """A chunk finishing each seen choice that has no reason yet (at the stream's end), or
        None when there is none to finish (or no reason to give them)."""
        if self.closed:
            return None
        choices: list[dict[str, Any]] = []
        self._close(choices)
        return {**self.head, "choices": choices} if choices else None

    def _close(self, choices: list[dict[str, Any]]) -> None:
        """Each unfinished seen choice finished in ``choices`` (in place where it is there)."""
        if self.reason is None:
            return
        self.closed = True
        present = {c["index"]: c for c in choices
                   if isinstance(c, dict) and isinstance(c.get("index"), int)}
        for index, tools in self.seen.items():
            if index in self.finished:
                continue
            reason = self._reason_for(tools)
            if index in present:
                present[index]["finish_reason"] = reason
            else:
                choices.append({"index": index, "delta": {}, "finish_reason": reason})
        self.finished.update(self.seen)

    def _reason_for(self, tools: bool) -> str:
        """The reason a choice left unfinished ends with: the stream's, fitted to whether the
        choice sent tool calls."""
        reason = self.reason or "stop"
        if reason in TOOL_REASONS and not tools:
            return "stop"
        if reason == "stop" and tools:
            return "tool_calls"
        return reason
