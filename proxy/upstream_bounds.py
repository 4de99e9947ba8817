"""The direct path's bounds on an upstream's reply, for the HTTP clients LiteLLM calls with.

The direct path reads at most ``upstream.max_response_bytes`` of a reply (or a whole stream)
and at most ``proxy.relay.MAX_EVENT_BYTES`` of one stream event (502 ``upstream_too_large``
past either), gives a plain request its timeout as a deadline for the whole reply (504
``upstream_timeout``: httpx's timeouts bound each read, not the whole), and parses only the
head of an error body. LiteLLM's Router had none of these (figures from the review's one-off
repro scripts of 2026-12-01, not a committed benchmark): an 80 MB reply was read whole
(+370 MB of memory), a trickling upstream held a request 21.5 s with a 5 s timeout, and an
upstream's error text, whole, was redacted by LiteLLM seven times over on the event loop
(``secret_redaction.redact_string``, ~1.8 s a megabyte each: a 2 MB error body froze every
request of the worker for a minute).

``bound_response``, a response event hook on every httpx client LiteLLM builds
(``proxy.litellm_clients``: the openai SDK's clients for ``openai/``, ``azure/`` and the
OpenAI-compatible providers, and LiteLLM's own ``AsyncHTTPHandler``/``HTTPHandler`` for every
other), gives each response, before anything reads its body:

- a content decoder that counts the decoded bytes (as the direct path counts them) and stops
  at the call's bounds, raising ``ReplyTooLarge`` (``too_large_as_502``, inside ``proxy.errors.map_upstream_errors``, maps it);
- for an error status, a body LiteLLM can afford to read: one of at most ``ERROR_KEPT_BYTES``
  as it came, a longer one as an OpenAI error envelope of its ``param``, ``code`` and the
  head of its message (``proxy.direct.error_fields`` reads them, as on the direct path),
  redacted by the gateway's ``Redactor`` before it is cut;
- for a stream, at most the event bound of one event and ``ERROR_EVENT_BYTES`` of an error
  event (``proxy.upstream_events``: the openai SDK raises its message, which LiteLLM redacts
  as an error body's: 1 MB held the loop 6.4 s);
- for a reply that is not a stream, the deadline of its request's read timeout (the
  deployment's ``timeout`` as LiteLLM sends it), counted from when the request was sent: past
  it, the library's ``ReadTimeout``, which LiteLLM and the gateway map as any timeout (504;
  a fallback attempt has its own deadline, as it has its own timeout).

The bounds of a call are the ``LiteLLMUpstream``'s (``bounds_for``, a context variable, which
the tasks LiteLLM starts for the call inherit); a response outside any gateway call is left as
it is. A request whose reply was cut (past a size bound or its deadline) is not sent again by
the call's retries, which fail at once as it did; its fallbacks are sent (``Call``). An
attempt is known by what it targets, never by its headers (a provider may sign each request
anew: Bedrock's SigV4 date, OCI's ``date``, Copilot's request id): its model group (``TARGET``,
noted by ``proxy.litellm_attempts`` as LiteLLM starts the attempt), URL, body and timeouts.
So a retry within the model group counts as the same request again, whichever deployment,
key or signature it lands on (a key pool's other key on the same server and model is refused
as well); a fallback names another model group, and is sent.
LiteLLM's ``aiohttp_openai/`` provider calls with aiohttp itself, where no hook reaches: such
a model is refused at config load (``proxy.config_values.unbounded_provider``; ``openai/``
reaches the same servers), a client's model name that a wildcard deployment would turn into
one is refused before routing (``proxy.litellm_clients.refuse_unbounded_model``), and any
attempt LiteLLM starts with it fails at once (``proxy.litellm_attempts``). Not covered: the
sync clients' deadline (the gateway calls LiteLLM only asynchronously).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import httpx

from proxy.errors import GatewayError, UpstreamFailed
from proxy.redaction import Redactor
from proxy.upstream_events import EventSizes, ReplyTooLarge

__all__ = ["CURRENT", "DEFAULT_MAX_BYTES", "ERROR_KEPT_BYTES", "ERROR_TEXT_CHARS", "TARGET",
           "Attempt", "Call", "EventSizes", "ReplyBounds", "ReplyTooLarge", "bound", "bound_response",
           "bound_response_sync", "bound_responses", "bounds_for", "error_body", "note_sent",
           "note_sent_sync", "too_large_as_502"]

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
    """What one call may read: the whole reply (or stream), in bytes (one stream event:
    ``event_limit``), and the redactor an error's text passes before it is cut."""

    max_bytes: int = DEFAULT_MAX_BYTES
    redact: Redactor = field(default_factory=Redactor)
    deadline: bool = False
    """Whether a reply must be read whole by its request's read timeout: a plain call's, not a
    stream's (whose reads each have the timeout, on either path)."""

    def event_limit(self) -> int:
        """``proxy.relay.MAX_EVENT_BYTES``, read when asked (tests change it)."""
        from proxy.relay import MAX_EVENT_BYTES  # relay imports proxy.upstream, which imports this

        return MAX_EVENT_BYTES


@dataclass(slots=True)
class Call:
    """One gateway call through LiteLLM, its retries and fallbacks included: its bounds, and the
    requests whose reply was cut (past a size bound, or by a plain reply's deadline). LiteLLM
    retries a cut reply (the SDK raises a size cut as a connection error, a deadline as a
    timeout): a retry of such a request fails at once, as the cut did (``note_sent``), instead
    of reading the same reply again. A fallback's request targets another model group (or
    URL, body or timeout: ``attempt``) and is sent."""

    bounds: ReplyBounds
    cuts: dict[Attempt, Callable[[], Exception]] = field(default_factory=dict)
    """The failure of each cut, raised again for a retry, by what a retry repeats of its
    request (``attempt``)."""

    def cut(self, request: Any, message: str) -> ReplyTooLarge:
        """Note that ``request``'s reply was cut past a size bound; the exception to raise."""
        self.note_cut(request, lambda: ReplyTooLarge(message))
        return ReplyTooLarge(message)

    def note_cut(self, request: Any, again: Callable[[], Exception]) -> None:
        """Note that ``request``'s reply was cut: a retry of it raises ``again()``."""
        key = attempt(request)
        if key is not None:
            self.cuts[key] = again

    def refuse_retry(self, request: Any) -> None:
        """Raise the cut again when ``request`` repeats one whose reply was cut."""
        key = attempt(request) if self.cuts else None
        again = self.cuts.get(key) if key is not None else None
        if again is not None:
            raise again()


TARGET: ContextVar[str | None] = ContextVar("vilmo_attempt_target", default=None)
"""The model group of the LiteLLM attempt being made (``proxy.litellm_attempts`` sets it as
LiteLLM starts each attempt; a fallback's is another group's)."""

Attempt = tuple[str | None, str, int]
"""What a retry repeats of a request (``attempt``)."""


def attempt(request: Any) -> Attempt | None:
    """What a retry repeats of a request: its model group (``TARGET``), URL, body and
    timeouts; None when its body is a stream. Headers are not part of it: a provider may sign
    each request anew (SigV4's ``X-Amz-Date`` and ``Authorization``, OCI's ``date``), the
    openai SDK counts its retries in one, and a retry within a model group may land on another
    key of a key pool; each is the same request again. A fallback to the same server, model
    and timeout with another key is another model group, and is sent."""
    try:
        body = bytes(request.content)
    except Exception:  # noqa: BLE001 - RequestNotRead (either httpx): a stream, no retry
        return None
    timeout = request.extensions.get("timeout")
    timeouts = sorted(timeout.items()) if isinstance(timeout, dict) else timeout
    return TARGET.get(), str(request.url), hash((body, repr(timeouts)))


CURRENT: ContextVar[Call | None] = ContextVar("vilmo_reply_bounds", default=None)
"""The gateway's call being made; None outside one (another openai SDK client in the process,
a test's: its responses are left as they are)."""


@contextmanager
def bounds_for(bounds: ReplyBounds) -> Iterator[None]:
    """The responses the calls made in this block receive are bounded by ``bounds``; the
    block is one call (``Call``: a cut reply is not read again by its retries)."""
    token, target = CURRENT.set(Call(bounds)), TARGET.set(None)
    try:
        yield
    finally:
        TARGET.reset(target)
        CURRENT.reset(token)


@contextmanager
def too_large_as_502(model: str) -> Iterator[None]:
    """A ``ReplyTooLarge`` anywhere under what LiteLLM raised is the gateway's 502
    ``upstream_too_large``, as on the direct path; a ``GatewayError`` a gateway hook raised in
    LiteLLM (``proxy.litellm_attempts``: an unbounded provider's 400) is raised as it is."""
    try:
        yield
    except Exception as exc:
        cut = _cut_in(exc)
        if cut is None or cut is exc and isinstance(exc, GatewayError):
            raise  # the gateway's own, as it was raised
        if isinstance(cut, GatewayError):
            raise cut from None
        raise UpstreamFailed(cut.message.replace("{model}", repr(model)),
                             code="upstream_too_large") from None


def _cut_in(exc: BaseException) -> ReplyTooLarge | GatewayError | None:
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen and len(seen) < 20:
        if isinstance(cause, ReplyTooLarge | GatewayError):
            return cause
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    return None


class BoundedDecoder:
    """A response's content decoder that counts what it decodes and stops at the bounds; of an
    error body it keeps only the head, given on ``flush``. httpx's decoders return bytes from
    ``decode`` and ``flush``, httpx2's iterate over pieces: either is kept as it is."""

    def __init__(self, inner: Any, call: Call, request: Any, *, error: bool,
                 stream: bool) -> None:
        self.inner = inner
        self.call = call
        self.request = request
        self.bounds = bounds = call.bounds
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
            raise self.call.cut(self.request, "the reply from the upstream for model {model} is "
                                f"larger than upstream.max_response_bytes ({self.bounds.max_bytes})")
        if self.events is not None:
            try:
                self.events.feed(decoded)
            except ReplyTooLarge as cut:
                raise self.call.cut(self.request, cut.message) from None
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
    it is not read whole by ``deadline`` (``time.monotonic``): a cut of ``call``, which its
    retries do not fetch again."""

    def __init__(self, stream: Any, deadline: float, timeout: type[httpx.TimeoutException],
                 request: Any, call: Call) -> None:
        self.stream = stream
        self.deadline = deadline
        self.timeout = timeout
        self.request = request
        self.call = call

    def late(self) -> Exception:
        return self.timeout("the upstream's reply did not end by its deadline",
                            request=self.request)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pieces = aiter(self.stream)
        while True:
            try:
                async with asyncio.timeout(self.deadline - time.monotonic()):
                    piece = await anext(pieces)
            except StopAsyncIteration:
                return
            except TimeoutError:
                self.call.note_cut(self.request, self.late)
                raise self.late() from None
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
    call = CURRENT.get()
    if call is None:
        return
    deadline = deadline and call.bounds.deadline
    status = response.status_code
    stream = response.headers.get("content-type", "").startswith("text/event-stream")
    response._decoder = BoundedDecoder(response._get_content_decoder(), call, response.request,
                                       error=status >= 400, stream=stream)
    if not deadline or response.is_closed:
        return
    request = response.request
    read = (request.extensions.get("timeout") or {}).get("read")
    sent = request.extensions.get(SENT_AT)
    if read is not None and sent is not None:
        library = library_of(response)
        response.stream = deadline_stream(library)(response.stream, sent + float(read),
                                                   library.ReadTimeout, request, call)


async def note_sent(request: Any) -> None:
    note_sent_sync(request)


def note_sent_sync(request: Any) -> None:
    """Note when ``request`` is sent; refuse it when its call cut its reply before."""
    call = CURRENT.get()
    if call is not None:
        call.refuse_retry(request)
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
