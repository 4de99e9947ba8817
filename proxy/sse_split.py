"""An upstream's SSE byte stream split into events at blank lines, each bounded in size: the
direct path's reader (``proxy.relay.SSEReader``) and the Router path's count of the bytes
LiteLLM reads (``proxy.upstream_events.EventSizes``) split it alike.

Its own module: the Router path's bounds are imported by ``proxy.upstream``, which
``proxy.relay`` imports.
"""

from __future__ import annotations

from proxy.errors import UpstreamFailed


class EventSplitter:
    """An SSE byte stream split into events at blank lines, in time linear in its bytes, however
    it arrives: each piece is searched once for the end of an event (from where the last
    search stopped, less one byte: a separator may straddle two pieces), and its line ends are
    made ``\\n`` in that piece alone (``\\r\\n`` and ``\\r``, as SSE has them; a ``\\r`` that
    ends a piece and a ``\\n`` that starts the next are one line end). Searching the whole
    buffer for each piece was quadratic: one event of a few MiB sent in 1 KiB pieces held the
    event loop for seconds. An event (ended or not) past ``max_event`` bytes is refused
    (``too_large``); it holds at most that much."""

    def __init__(self, model: str, max_event: int) -> None:
        self.model = model
        self.max_event = max_event
        self.buffer = bytearray()  # the event being read, its line ends \n
        self.after_cr = False  # the last piece ended \r: a \n starting the next is its end

    def feed(self, piece: bytes) -> list[bytes]:
        """The events that ``piece`` completes, each without its blank line (``ended``)."""
        if self.after_cr and piece.startswith(b"\n"):
            piece = piece[1:]  # the \n of a \r\n split between two pieces
        self.after_cr = piece.endswith(b"\r")  # also when nothing is left of ``piece``
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        at = max(len(self.buffer) - 1, 0)  # no separator ends before the old bytes' last one
        self.buffer += piece
        events: list[bytes] = []
        start = 0
        while (end := self.buffer.find(b"\n\n", at)) >= 0:
            self.check(end - start)
            self.ended(start, end, events)
            start = at = end + 2
        if start:
            del self.buffer[:start]
        self.check(len(self.buffer))
        return events

    def ended(self, start: int, end: int, events: list[bytes]) -> None:
        """The event at ``buffer[start:end]`` ended: kept in ``events``."""
        events.append(bytes(self.buffer[start:end]))

    def rest(self) -> bytes:
        """What is left when the stream ends: its last event, without its blank line."""
        return bytes(self.buffer)

    def check(self, size: int) -> None:
        if size > self.max_event:
            raise self.too_large(f"sent a stream event larger than {self.max_event} bytes")

    def too_large(self, what: str) -> Exception:
        """The failure for an event past a bound (``what`` the upstream did)."""
        return UpstreamFailed(f"the upstream for model {self.model!r} {what}",
                              code="upstream_too_large")
