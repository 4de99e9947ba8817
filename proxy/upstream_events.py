"""The bound on one stream event of an upstream's reply on LiteLLM's Router path, and the
smaller one on an error event (``proxy.upstream_bounds`` feeds each stream's bytes here).

An error event's message is raised by the openai SDK (``APIError``) and then redacted by
LiteLLM on the event loop, several times, at about 1.8 s a megabyte: such an event past
``ERROR_EVENT_BYTES`` is refused before anything parses it. Which event is an error is
decided as the SDK decides it, on the event's JSON: a byte pattern missed an escaped key
(``"\\u0065rror"``: 7 s of a frozen loop in a review's one-off repro) and caught normal events that hold the word (a
logprobs token ``"error"``, a provider's ``"error": null``).
"""

from __future__ import annotations

import json

from proxy.sse_split import EventSplitter


class ReplyTooLarge(Exception):
    """A bound was crossed; ``message`` is the gateway's text for the 502."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


ERROR_EVENT_BYTES = 8192
"""The largest stream error event LiteLLM is given (the openai SDK raises such an event's
message, which LiteLLM redacts as an error body's: 1 MB held the loop 6.4 s in a one-off repro): past it, 502
``upstream_too_large`` (an error event is the stream's end either way; OpenAI's are under a
kilobyte)."""


def names_error(event: bytes) -> bool:
    """Whether a stream event (its lines, ``\\n``-ended) is an error to whoever reads it: its
    data (its ``data:`` lines joined, as the SSE decoders join them) is a JSON object whose
    ``error`` is set, as the openai SDK tests it (``data.get("error")``; LiteLLM's own
    handlers name their errors so too). Read as JSON, not matched as bytes: a key can be
    escaped (``"\\u0065rror"``), and ``"error"`` can be a token's text or a null field."""
    lines = event.split(b"\n")
    data = b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))
    try:
        parsed = json.loads(data.decode("utf-8"))  # as the SDK decodes a line: strictly
    except (ValueError, RecursionError):  # no JSON to the SDK either: no error raised
        return False
    return isinstance(parsed, dict) and bool(parsed.get("error"))


class EventSizes(EventSplitter):
    """The size of each stream event in an SSE byte stream fed piece by piece, split as the
    direct path splits it (``proxy.sse_split.EventSplitter``): an event past ``limit`` is
    refused, and one past ``ERROR_EVENT_BYTES`` that names an error (``names_error``), each a
    ``ReplyTooLarge`` (its text's ``{model}`` filled in by ``too_large_as_502``). No event is
    kept: one is read as JSON only when it ends past ``ERROR_EVENT_BYTES``, so a token's event
    is never parsed twice (LiteLLM's SSE decoder parses it)."""

    def __init__(self, limit: int) -> None:
        super().__init__("{model}", limit)

    def ended(self, start: int, end: int, events: list[bytes]) -> None:
        if end - start > ERROR_EVENT_BYTES and names_error(bytes(self.buffer[start:end])):
            raise self.too_large(f"sent an error event larger than {ERROR_EVENT_BYTES} bytes")

    def too_large(self, what: str) -> Exception:
        return ReplyTooLarge(f"the upstream for model {{model}} {what}")
