"""Every choice of an ``n > 1`` stream from LiteLLM's Router ended as the direct path ends it.

LiteLLM's stream wrapper (1.110) drops each later choice's first chunk when its text is empty
(the chunk with its ``role``) and keeps one ``finish_reason`` for the whole stream, sent once
on its last chunk: choice 1 of ``n: 2`` came without ``role`` and without ``finish_reason``,
and the openai client's stream helper built it with neither. ``ChoiceEnds`` gives each choice
``role: assistant`` on its first delta when it has none, and, on the chunk where a choice
finishes, the same ``finish_reason`` to every choice seen that has none (LiteLLM's one reason:
the upstream's own per choice is lost inside LiteLLM, so a choice cut by ``length`` while
another stopped may read as the stream's). A choice first seen after that gets it on its own
first chunk. A stream with no reason at all is LiteLLM's own 502
(``proxy.errors.STREAM_CUT_SHORT``).
"""

from __future__ import annotations

from typing import Any

ROLE = "assistant"


class ChoiceEnds:
    """One Router stream's choices: which have had a delta, and which have finished."""

    __slots__ = ("finished", "reason", "seen")

    def __init__(self) -> None:
        self.seen: list[int] = []
        """Choice indexes in the order their first delta came."""
        self.finished: set[int] = set()
        self.reason: str | None = None
        """The stream's finish_reason, once a choice has one."""

    def note(self, chunk: dict[str, Any]) -> None:
        """Changes ``chunk`` in place: a choice's first delta gets its role, and where a choice
        finishes, every other seen choice without a reason gets that one as well."""
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or not isinstance(choice.get("index"), int):
                continue
            index = choice["index"]
            if index not in self.seen:
                self.seen.append(index)
                delta = choice.get("delta")
                if isinstance(delta, dict) and "role" not in delta:
                    choice["delta"] = {"role": ROLE, **delta}
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finished.add(index)
                self.reason = self.reason or reason
        if self.reason is None:
            return
        here: set[int] = set()
        for choice in choices:  # a choice in this chunk without a reason: given it here
            if isinstance(choice, dict) and choice.get("index") in self.seen:
                here.add(choice["index"])
                if not choice.get("finish_reason"):
                    choice["finish_reason"] = self.reason
        choices.extend({"index": index, "delta": {}, "finish_reason": self.reason}
                       for index in self.seen if index not in self.finished | here)
        self.finished.update(self.seen)
