"""Chat messages to a plain-text prompt for a base model (no chat template), and back.

A base model has no notion of roles, so the conversation is written out as a transcript: the
system instruction first as a paragraph, then ``User:`` / ``Assistant:`` turns, ending with the
assistant's turn prefix for the model to continue. A ``User:`` or ``Assistant:`` line that the
model invents marks the end of its turn (``STOP``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

USER, ASSISTANT = "User:", "Assistant:"
STOP: tuple[str, ...] = ("\nUser:", "\nAssistant:")
ROLE_PREFIX = {"user": USER, "assistant": ASSISTANT, "tool": "Tool:", "function": "Tool:"}


class RenderError(ValueError):
    """Messages that cannot be rendered (wrong shape)."""


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    raise RenderError("message content must be a string or a list of content parts")


def render(messages: Sequence[dict[str, Any]]) -> str:
    """The transcript prompt: system text(s) first, then the turns, then ``Assistant:``."""
    if not messages:
        raise RenderError("messages must not be empty")
    system: list[str] = []
    turns: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise RenderError(f"messages[{i}] must be an object with a 'role'")
        role = str(message["role"])
        text = content_text(message.get("content")).strip()
        if role in ("system", "developer"):
            if text:
                system.append(text)
        elif role in ROLE_PREFIX:
            turns.append(f"{ROLE_PREFIX[role]} {text}")
        else:
            raise RenderError(f"messages[{i}]: unknown role {role!r}")
    head = "\n\n".join(system)
    body = "\n".join([*turns, ASSISTANT])
    return f"{head}\n\n{body}" if head else body


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if not found:
        return text, False
    return text[:min(found)], True


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters might be the start of a stop string (not yet safe to
    stream)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                longest = max(longest, n)
                break
    return longest
