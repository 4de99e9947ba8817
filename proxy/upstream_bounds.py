"""The direct path's bounds on an upstream's reply, for the HTTP clients LiteLLM calls with.

The direct path reads at most ``upstream.max_response_bytes`` of a reply (or a whole stream)
and at most ``proxy.relay.MAX_EVENT_BYTES`` of one stream event (502 ``upstream_too_large``
past either), gives a plain request its timeout as a deadline for the whole reply (504
``upstream_timeout``: httpx's timeouts bound each read, not the whole), and parses only the
head of an error body. LiteLLM's Router had none of these: an 80 MB reply was read whole
(+370 MB of memory), a trickling upstream held a request 21.5 s with a 5 s timeout, and an
upstream's error text, whole, was redacted by LiteLLM seven times over on the event loop
(``secret_redaction.redact_string``, ~1.8 s a megabyte each: a 2 MB error body froze every
request of the worker for a minute).

``bound_response``, a response event hook on every httpx client LiteLLM builds
(``proxy.litellm_clients``: the openai SDK's clients for ``openai/``, ``azure/`` and the
OpenAI-compatible providers, and LiteLLM's own ``AsyncHTTPHandler``/``HTTPHandler`` for every
other), gives each response, before anything reads its body:

- a content decoder that counts the decoded bytes (as the direct path counts them) and stops
  at the call's bounds, raising ``ReplyTooLarge`` (``too_large_as_502`` maps it);
- for an error status, a body LiteLLM can afford to read: one of at most ``ERROR_KEPT_BYTES``
  as it came, a longer one as an OpenAI error envelope of its ``param``, ``code`` and the
  head of its message (``proxy.direct.error_fields`` reads them, as on the direct path),
  redacted by the gateway's ``Redactor`` before it is cut;
- for a stream, at most ``ERROR_EVENT_BYTES`` of an event that names an error (the openai SDK
  raises its message, which LiteLLM redacts as an error body's: 1 MB held the loop 6.4 s);
- for a reply that is not a stream, the deadline of its request's read timeout (the
  deployment's ``timeout`` as LiteLLM sends it), counted from when the request was sent: past
  it, the library's ``ReadTimeout``, which LiteLLM and the gateway map as any timeout (504;
  each retry or fallback attempt has its own deadline, as each has its own timeout).

The bounds of a call are the ``LiteLLMUpstream``'s (``bounds_for``, a context variable, which
the tasks LiteLLM starts for the call inherit); a response outside any gateway call is left as
it is. Not covered: LiteLLM's handlers that call
with aiohttp itself rather than through an httpx client (``aiohttp_openai/``), and the
sync clients' deadline (the gateway calls LiteLLM only asynchronously).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import httpx

from proxy.errors import UpstreamFailed
from proxy.redaction import Redactor

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
"""``upstream.max_response_bytes``'s default."""
ERROR_KEPT_BYTES = 2048
"""An error body up to this long reaches LiteLLM as it came (OpenAI's are under a kilobyte)."""
ERROR_TEXT_CHARS = 1024
"""Of a longer one, LiteLLM gets this much of its message (the gateway logs 500 characters of
LiteLLM's text, ``proxy.upstream_log``): every redaction LiteLLM makes of it is then cheap."""
SENT_AT = "vilmo_sent_at"
"""The request extension noting when it was sent (``note_sent``), for its reply's deadline."""


@dataclass(frozen=True, slots=True)
class ReplyBounds:
    """What one call may read: the whole reply (or stream) and one stream event, in bytes, and
    the redactor an error's text passes before it is cut."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_event: int | None = None
    """None: ``proxy.relay.MAX_EVENT_BYTES``."""
    redact: Redactor = field(default_factory=Redactor)
    deadline: bool = False
    """Whether a reply must be read whole by its request's read timeout: a plain call's, not a
    stream's (whose reads each have the timeout, on either path)."""

    def event_limit(self) -> int:
        if self.max_event is not None:
            return self.max_event
        from proxy.relay import MAX_EVENT_BYTES  # relay imports proxy.upstream, which imports this

        return MAX_EVENT_BYTES


CURRENT: ContextVar[ReplyBounds | None] = ContextVar("vilmo_reply_bounds", default=None)
"""The bounds of the gateway's call being made; None outside one (another openai SDK client in
the process, a test's: its responses are left as they are)."""


@contextmanager
def bounds_for(bounds: ReplyBounds) -> Iterator[None]:
    """The responses the calls made in this block receive are bounded by ``bounds``."""
    token = CURRENT.set(bounds)
    try:
        yield
    finally:
        CURRENT.reset(token)


class ReplyTooLarge(Exception):
    """A bound was crossed; ``message`` is the gateway's text for the 502."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@contextmanager
def too_large_as_502(model: str) -> Iterator[None]:
    """A ``ReplyTooLarge`` anywhere under what LiteLLM raised is the gateway's 502
    ``upstream_too_large``, as on the direct path."""
    try:
        yield
    except Exception as exc:
        cut = _cut_in(exc)
        if cut is None:
            raise
        raise UpstreamFailed(cut.message.replace("{model}", repr(model)),
                             code="upstream_too_large") from None


def _cut_in(exc: BaseException) -> ReplyTooLarge | None:
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen and len(seen) < 20:
        if isinstance(cause, ReplyTooLarge):
            return cause
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    return None


ERROR_MARK = b'"error"'
"""How an error event's JSON names its error (a key; in a chunk's text it is escaped)."""
ERROR_EVENT_BYTES = 8192
"""The largest stream event naming an error LiteLLM is given (the openai SDK raises such an
event's message, which LiteLLM redacts as an error body's): past it, 502 ``upstream_too_large``
(an error event is the stream's end either way; OpenAI's are under a kilobyte)."""


class EventSizes:
    """The size of the stream event being read, in an SSE byte stream fed piece by piece (its
    line ends ``\n``, ``\r\n`` or ``\r``, as ``proxy.relay.EventSplitter`` reads them),
    holding none of its bytes; an event that names an error (``ERROR_MARK``) has the smaller
    bound ``ERROR_EVENT_BYTES``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.last = b""  # the last byte read, a line end's
        self.after_cr = False
        self.erring = False  # the event read names an error
        self.tail = b""  # its last bytes, where a mark may straddle two pieces

    def feed(self, piece: bytes) -> None:
        if self.after_cr and piece.startswith(b"\n"):
            piece = piece[1:]  # the \n of a \r\n split between two pieces
        if not piece:
            return
        self.after_cr = piece.endswith(b"\r")
        if b"\r" in piece:
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        text = self.last + piece  # a blank line may straddle two pieces
        fresh = len(self.last)  # where ``piece`` starts in ``text``
        before = self.size - fresh  # the event's size, less where it ends in ``text``
        start = 0
        while (end := text.find(b"\n\n", start)) >= 0:
            self.check(before + end, self.names_error(text, max(start, fresh), end))
            before, start = -(end + 2), end + 2
            self.erring, self.tail = False, b""
        self.size = before + len(text)
        self.last = text[-1:]
        self.erring = self.names_error(text, max(start, fresh), len(text))
        self.tail = (self.tail + text[max(start, fresh):])[-len(ERROR_MARK):]
        self.check(self.size, self.erring)

    def names_error(self, text: bytes, start: int, end: int) -> bool:
        """Whether the event read so far, with ``text[start:end]`` (bytes not read before),
        names an error."""
        return self.erring or text.find(ERROR_MARK, start, end) >= 0 or \
            ERROR_MARK in self.tail + text[start:min(end, start + len(ERROR_MARK))]

    def check(self, size: int, erring: bool) -> None:
        if size > self.limit:
            raise ReplyTooLarge(f"the upstream for model {{model}} sent a stream event larger "
                                f"than {self.limit} bytes")
        if erring and size > ERROR_EVENT_BYTES:
            raise ReplyTooLarge(f"the upstream for model {{model}} sent an error event larger "
                                f"than {ERROR_EVENT_BYTES} bytes")


class BoundedDecoder:
    """A response's content decoder that counts what it decodes and stops at the bounds; of an
    error body it keeps only the head, given on ``flush``. httpx's decoders return bytes from
    ``decode`` and ``flush``, httpx2's iterate over pieces: either is kept as it is."""

    def __init__(self, inner: Any, bounds: ReplyBounds, *, error: bool, stream: bool) -> None:
        self.inner = inner
        self.bounds = bounds
        self.total = 0
        self.error = error
        self.head = bytearray()
        self.events = EventSizes(bounds.event_limit()) if stream and not error else None

    def decode(self, data: bytes) -> Any:
        decoded = self.inner.decode(data)
        if isinstance(decoded, bytes):
            return self.take(decoded)
        return (taken for piece in decoded if (taken := self.take(piece)))

    def flush(self) -> Any:
        flushed = self.inner.flush()
        if isinstance(flushed, bytes):
            taken = self.take(flushed)
            return self.error_body() if self.error else taken
        return self._flushed(flushed)

    def _flushed(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            if taken := self.take(piece):
                yield taken
        if self.error:
            yield self.error_body()

    def error_body(self) -> bytes:
        return error_body(bytes(self.head), self.total, self.bounds.redact)

    def take(self, decoded: bytes) -> bytes:
        self.total += len(decoded)
        if self.total > self.bounds.max_bytes:
            raise ReplyTooLarge(f"the reply from the upstream for model {{model}} is larger "
                                f"than upstream.max_response_bytes ({self.bounds.max_bytes})")
        if self.events is not None:
            self.events.feed(decoded)
        if not self.error:
            return decoded
        from proxy.direct import ERROR_BODY_BYTES

        if len(self.head) <= ERROR_BODY_BYTES:
            self.head += decoded[:ERROR_BODY_BYTES + 1 - len(self.head)]
        return b""


def error_body(head: bytes, total: int, redact: Redactor) -> bytes:
    """An error body as LiteLLM reads it: as it came when short, else an OpenAI envelope of its
    ``param``, ``code`` (short ones) and message (redacted, then cut)."""
    if total <= ERROR_KEPT_BYTES:
        return head
    from proxy.direct import error_fields  # the direct path's reading of an error body
    from proxy.upstream_hints import MAX_LABEL_CHARS

    message, param, code = error_fields(head)  # a head past ERROR_BODY_BYTES: not parsed
    error: dict[str, Any] = {"message": redact.cut(message, ERROR_TEXT_CHARS)}
    for name, value in (("param", param), ("code", code)):
        if type(value) in (str, int) and len(str(value)) <= MAX_LABEL_CHARS:
            error[name] = value
    return json.dumps({"error": error}).encode()


class _Deadline:
    """A response body stream that fails with ``timeout`` (the library's ``ReadTimeout``) when
    it is not read whole by ``deadline`` (``time.monotonic``)."""

    def __init__(self, stream: Any, deadline: float, timeout: type[httpx.TimeoutException],
                 request: Any) -> None:
        self.stream = stream
        self.deadline = deadline
        self.timeout = timeout
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pieces = aiter(self.stream)
        while True:
            try:
                async with asyncio.timeout(self.deadline - time.monotonic()):
                    piece = await anext(pieces)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise self.timeout("the upstream's reply did not end by its deadline",
                                   request=self.request) from None
            yield piece

    async def aclose(self) -> None:
        await self.stream.aclose()


@cache
def deadline_stream(library: ModuleType) -> type[_Deadline]:
    """``_Deadline`` as a body stream of ``library``, httpx or httpx2 (the openai SDK's own
    httpx): each checks that a response's stream is its ``AsyncByteStream``."""
    return type("DeadlineStream", (_Deadline, library.AsyncByteStream), {})


def library_of(response: Any) -> ModuleType:
    """The module (httpx or httpx2, imported by whoever made ``response``) it is of."""
    return sys.modules[type(response).__module__.partition(".")[0]]


def bound(response: Any, *, deadline: bool) -> None:
    """Give ``response`` (httpx's or httpx2's, its head just read) the call's bounds."""
    bounds = CURRENT.get()
    if bounds is None:
        return
    deadline = deadline and bounds.deadline
    status = response.status_code
    stream = response.headers.get("content-type", "").startswith("text/event-stream")
    response._decoder = BoundedDecoder(response._get_content_decoder(), bounds,
                                       error=status >= 400, stream=stream)
    if not deadline or response.is_closed:
        return
    request = response.request
    read = (request.extensions.get("timeout") or {}).get("read")
    sent = request.extensions.get(SENT_AT)
    if read is not None and sent is not None:
        library = library_of(response)
        response.stream = deadline_stream(library)(response.stream, sent + float(read),
                                                   library.ReadTimeout, request)


async def note_sent(request: Any) -> None:
    request.extensions[SENT_AT] = time.monotonic()


def note_sent_sync(request: Any) -> None:
    request.extensions[SENT_AT] = time.monotonic()


async def bound_response(response: Any) -> None:
    bound(response, deadline=True)


def bound_response_sync(response: Any) -> None:
    bound(response, deadline=False)


def bound_responses(client: Any) -> None:
    """Install the hooks on an httpx (or httpx2) client, sync or async, once."""
    hooks = client.event_hooks
    if any(hook in hooks["response"] for hook in (bound_response, bound_response_sync)):
        return
    is_async = asyncio.iscoroutinefunction(client.send)
    hooks["request"].append(note_sent if is_async else note_sent_sync)
    hooks["response"].append(bound_response if is_async else bound_response_sync)
    client.event_hooks = hooks
