"""The server edge's limits (``proxy.server``) on uvicorn's HTTP/1.1 protocols, and the h11 one.

``EdgeLimits`` holds what both protocols share: the connection limit at accept, the read
deadline timer, and the refusal written in the OpenAI envelope straight to the socket, then a
lingering close (the client's unread bytes drained, bounded, so no reset loses it). Each
protocol says where its parser stands: h11 refuses from its events, httptools
(``proxy.edge_httptools``, imported only where httptools is installed) from its callbacks and
from the bytes fed to it while a head is incomplete.

Each refusal is counted by reason (``EDGE_REASONS``, a fixed set) in the app's
``vilmo_edge_refusals_total``, through the callable the app's lifespan puts in the server's
lifespan state under ``EDGE_COUNTER`` (the edge sits below the app and has no other way to its
metrics; without a lifespan nothing is counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
from collections.abc import Callable
from typing import Any, Literal, Protocol, get_args

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from proxy.errors import GatewayError, InvalidRequest

MAX_HEAD_BYTES = 64 * 1024
"""The request line and headers together; the largest legitimate head (a long bearer key, a
few tracing headers) is a few KiB."""
MAX_HEADERS = 100
LINGER_S = 2.0
"""How long a refused connection is kept reading (and discarding) after its answer: closed
with request bytes unread, the kernel resets it and the client may lose the answer."""
LINGER_MAX_BYTES = 1024 * 1024
"""How much a refused connection may still send, discarded unparsed, before it is closed."""

EdgeReason = Literal["read_timeout", "head_too_large", "connection_limit", "request_limit",
                     "pipeline_limit", "malformed", "host_not_allowed"]
"""Why the edge refused a request: 408, 431, 503 (connections, requests in flight, requests
pipelined on one connection), 400 (not HTTP, or an upgrade request with a body), 421 (a
``Host`` not in ``server.allowed_hosts``: counted by ``proxy.trusted_host``, the app's edge)."""
EDGE_REASONS: tuple[EdgeReason, ...] = get_args(EdgeReason)
EDGE_COUNTER = "vilmo_edge_refused"
"""The lifespan state's key for the app's ``Callable[[EdgeReason], None]`` that counts a
refusal (``proxy.app``)."""


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"


class HeadTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"


class Overloaded(GatewayError):
    status = 503


def head_too_large() -> HeadTooLarge:
    return HeadTooLarge(f"the request head is larger than {MAX_HEAD_BYTES} bytes or has more "
                        f"than {MAX_HEADERS} header fields",
                        code="request_header_fields_too_large")


def too_many_requests() -> Overloaded:
    return Overloaded("the gateway is at its request limit; retry later",
                      code="server_overloaded")


def malformed() -> InvalidRequest:
    return InvalidRequest("malformed HTTP request", code="invalid_http_request")


def head_size(target: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    return len(target) + sum(len(name) + len(value) + 4 for name, value in headers)


class Cycle(Protocol):
    """What the deadline touches of either protocol's request-response cycle."""

    response_started: bool
    response_complete: bool
    disconnected: bool
    message_event: asyncio.Event


class EdgeLimits(asyncio.Protocol):
    """The limits both protocols keep; a subclass puts this before uvicorn's protocol."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    limit_concurrency: int | None
    app_state: dict[str, Any]

    def init_limits(self, config: uvicorn.Config) -> None:
        """Takes the request limit over from uvicorn (whose 503 is text/plain)."""
        self.max_concurrency = self.limit_concurrency
        self.limit_concurrency = None
        self.read_timeout_s: float = getattr(config, "request_read_timeout_s", 60.0)
        self.deadline: asyncio.TimerHandle | None = None
        self.stopping = False
        """The server is shutting down: a refusal now closes without lingering."""
        self.lingering = False
        """Refused and answered: what still comes is discarded, not parsed."""
        self.discarded = 0
        """Bytes discarded while lingering (bounded by ``LINGER_MAX_BYTES``)."""
        self.linger_end: asyncio.TimerHandle | None = None
        """Closes a lingering connection ``LINGER_S`` after its refusal."""
        self.write_stall: asyncio.TimerHandle | None = None
        """Aborts a connection whose client has read none of its answers (the write buffer
        full) for ``read_timeout_s``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # uvicorn's protocol, next in the MRO
        self.admit_connection()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        super().connection_lost(exc)

    def admit_connection(self) -> bool:
        """503 and closed past the connection limit; else the first request's deadline runs."""
        if self.max_concurrency is not None and len(self.connections) > self.max_concurrency:
            self.refuse(Overloaded("the gateway is at its connection limit; retry later",
                                   code="server_overloaded"), "connection_limit")
            return False
        self.arm()
        return True

    def arm(self) -> None:
        if self.deadline is None and not self.lingering and not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.read_timeout_s, self.expired)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def release(self) -> None:
        """The connection is gone: no timer of it may run."""
        self.disarm()
        if self.linger_end is not None:
            self.linger_end.cancel()
            self.linger_end = None
        self.write_resumed()

    def pause_writing(self) -> None:
        """The client does not read its answers (the write buffer is full): unless it reads
        within ``read_timeout_s``, the connection is aborted. Else it would be held for ever,
        and its request task with it: the app's send waits for the drain, and a close too."""
        super().pause_writing()
        if self.write_stall is None:
            self.write_stall = self.loop.call_later(self.read_timeout_s, self.transport.abort)

    def resume_writing(self) -> None:
        self.write_resumed()
        super().resume_writing()

    def write_resumed(self) -> None:
        if self.write_stall is not None:
            self.write_stall.cancel()
            self.write_stall = None

    def close_now(self) -> None:
        """Closes; what is still buffered for a client that has not read it is dropped (a
        close would wait for the client to read it)."""
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def expired(self) -> None:
        raise NotImplementedError

    def time_out(self, cycle: Cycle | None) -> None:
        """408 and closed; the app waiting for the body (``cycle``) gets http.disconnect."""
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.refuse(RequestTimeout(
            f"the request was not received within {self.read_timeout_s:g} s",
            code="request_timeout"), "read_timeout")

    def refuse(self, error: GatewayError, reason: EdgeReason) -> None:
        """Writes the error's envelope straight to the socket and closes the connection once
        the client has had it (``linger``), counted by ``reason``. The app still waiting for
        this request's body gets http.disconnect and writes nothing more."""
        if self.transport.is_closing() or self.lingering:
            return
        self.count_refusal(reason)
        cycle: Cycle | None = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        body = json.dumps(error.envelope()).encode()
        head = (f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n").encode("ascii")
        self.transport.write(head + body)
        self.linger()

    def count_refusal(self, reason: EdgeReason) -> None:
        """Counts a refusal in the app's metrics, when the app's lifespan gave a counter; a
        failing counter never fails the edge."""
        count: Callable[[EdgeReason], None] | None = self.app_state.get(EDGE_COUNTER)
        if count is not None:
            with contextlib.suppress(Exception):
                count(reason)

    def linger(self) -> None:
        """Closes as nginx's lingering close does: a socket closed with request bytes unread
        is reset by the kernel, and the reset may destroy the answer before the client reads
        it. So the write side is shut (the client reads the answer to its end), and what the
        client still sends is read and discarded until it closes, for at most ``LINGER_S``
        and ``LINGER_MAX_BYTES``."""
        self.disarm()
        if self.stopping:
            self.close_now()
            return
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger_end = self.loop.call_later(LINGER_S, self.close_now)
        self.transport.resume_reading()  # it may have been paused for a body or a pipeline

    def stop(self) -> bool:
        """The server shuts down: whether this connection is refused and so closed now (else
        uvicorn's ``shutdown`` ends it)."""
        self.stopping = True
        if self.lingering:
            self.close_now()
        return self.lingering

    def discard(self, data: bytes) -> bool:
        """Whether ``data`` came after a refusal (then it is dropped unparsed; past
        ``LINGER_MAX_BYTES`` the connection is closed)."""
        if not self.lingering:
            return False
        self.discarded += len(data)
        if self.discarded > LINGER_MAX_BYTES:
            self.close_now()
        return True


class H11Parser(h11.Connection):
    """h11's server side that keeps the error a request was refused for (uvicorn drops it), and
    lets the protocol refuse a parsed head (``admit``) the same way."""

    def __init__(self, protocol: H11GatewayProtocol) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.protocol = protocol
        self.refused: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                self.protocol.admit(event)
            return event
        except h11.RemoteProtocolError as exc:
            self.refused = exc
            raise


class H11GatewayProtocol(EdgeLimits, H11Protocol):
    """uvicorn's h11 protocol (pure Python) with the edge's limits."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = H11Parser(self)
        self.init_limits(config)

    def data_received(self, data: bytes) -> None:
        if not self.discard(data):
            super().data_received(data)

    def shutdown(self) -> None:
        """A refused connection, lingering, is closed at once (h11 would refuse to end it)."""
        if not self.stop():
            super().shutdown()

    def handle_events(self) -> None:
        super().handle_events()
        their = self.conn.their_state
        if their is h11.SEND_BODY or (their is h11.IDLE and self.conn.trailing_data[0]):
            self.arm()  # a request has begun and is not complete
        elif their is not h11.IDLE:
            self.disarm()  # complete (DONE), or the connection is ending

    def admit(self, request: h11.Request) -> None:
        """Refuses a parsed head: too large or too many fields (431; h11 bounds only a head
        still incomplete, not one that came whole in one read), or too many requests running
        (503)."""
        if (len(request.headers) > MAX_HEADERS
                or head_size(request.target, list(request.headers)) > MAX_HEAD_BYTES):
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        if self.max_concurrency is not None and len(self.tasks) >= self.max_concurrency:
            raise h11.RemoteProtocolError("too many requests in flight", error_status_hint=503)

    def send_400_response(self, msg: str) -> None:
        """A request h11 or ``admit`` refused, in the envelope; the connection is closed."""
        refused = self.conn.refused if isinstance(self.conn, H11Parser) else None
        status = refused.error_status_hint if refused is not None else 400
        if status == 431:
            self.refuse(head_too_large(), "head_too_large")
        elif status == 503:
            self.refuse(too_many_requests(), "request_limit")
        else:
            self.refuse(malformed(), "malformed")

    def expired(self) -> None:
        """The request was not complete in time: 408 unless its answer has begun (then the
        connection is only closed); a connection on which no byte came is closed quietly, as
        an idle keep-alive connection is."""
        self.deadline = None
        if self.transport.is_closing():
            return
        their = self.conn.their_state
        cycle = self.cycle if their is h11.SEND_BODY else None
        if (cycle is not None and cycle.response_started) or (
                their is h11.IDLE and not self.conn.trailing_data[0]):
            self.close_now()
        else:
            self.time_out(cycle)
