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


class EventSizes:
    """The size of each stream event in an SSE byte stream fed piece by piece (its line ends
    ``\\n``, ``\\r\\n`` or ``\\r``, as ``proxy.relay.EventSplitter`` reads them): an event past
    ``limit`` is refused, and one past ``ERROR_EVENT_BYTES`` that names an error
    (``names_error``). It holds the event being read (at most ``limit`` bytes, as the SSE
    decoder it feeds does), which is read as JSON only when it ends past ``ERROR_EVENT_BYTES``:
    a token's event is never parsed twice."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.event = bytearray()  # the event being read, its line ends \n
        self.after_cr = False  # the last piece ended \r: a \n starting the next is its end

    def feed(self, piece: bytes) -> None:
        if self.after_cr and piece.startswith(b"\n"):
            piece = piece[1:]  # the \n of a \r\n split between two pieces
        self.after_cr = piece.endswith(b"\r")  # also when nothing is left of ``piece``
        if not piece:
            return
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        event = self.event
        search = max(len(event) - 1, 0)  # a blank line may straddle two pieces
        event += piece
        start = 0
        while (end := event.find(b"\n\n", search)) >= 0:
            self.check(end - start, event, start)
            start = search = end + 2
        if start:
            del event[:start]
        self.check(len(event), None, 0)

    def check(self, size: int, ended: bytearray | None, start: int) -> None:
        """Refuse an event of ``size`` bytes; ``ended``: the text where it ends, at ``start``."""
        if size > self.limit:
            raise ReplyTooLarge(
                f"the upstream for model {{model}} sent a stream event larger "
                f"than {self.limit} bytes"
            )
        if (
            ended is not None
            and size > ERROR_EVENT_BYTES
            and names_error(bytes(ended[start : start + size]))
        ):
            raise ReplyTooLarge(
                f"the upstream for model {{model}} sent an error event larger "
                f"than {ERROR_EVENT_BYTES} bytes"
            )
