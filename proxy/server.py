"""The gateway's HTTP server edge: uvicorn on h11, with the limits uvicorn does not set.

A client that has not authenticated yet must not hold a worker's memory or file descriptors:

- the request head (request line and headers) is at most ``MAX_HEAD_BYTES`` and
  ``MAX_HEADERS`` fields, else 431 (httptools, uvicorn's default parser, has no such limit);
- a whole request, head and body, must arrive within ``server.request_read_timeout_s`` of its
  first byte (of connecting, for a new connection), else 408 and the connection is closed;
- a worker serves at most ``server.limit_concurrency`` connections and requests at once; the
  next is answered 503 and closed at once, before it can hold a descriptor;
- a malformed request is answered in the OpenAI error envelope, not uvicorn's text/plain 400.

These answers are written to the socket here, below the app: they reach no route, no audit
record and no metric. ``ServerConfig`` carries the limits to every ``--workers`` process
(uvicorn pickles its config for them); ``serve`` runs it as ``uvicorn.run`` would.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import resource
import sys
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from proxy.errors import GatewayError, InvalidRequest
from proxy.settings import ServerSettings

MAX_HEAD_BYTES = 64 * 1024
"""The request line and headers together; the largest legitimate head (a long bearer key, a
few tracing headers) is a few KiB."""
MAX_HEADERS = 100
FILES_BESIDES_CLIENTS = 256
"""Descriptors a worker needs besides its client connections (upstream pool, store, logs)."""

log = logging.getLogger(__name__)


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"


class HeadTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"


class Overloaded(GatewayError):
    status = 503


class ServerConfig(uvicorn.Config):
    """uvicorn's config on the gateway's protocol, with its limits (plain values: a spawned
    worker unpickles them)."""

    def __init__(self, app: Any, settings: ServerSettings, **options: Any) -> None:
        super().__init__(app, http=GatewayProtocol, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                         ws="none",  # no WebSocket route: an upgrade would leave these limits
                         timeout_keep_alive=settings.keep_alive_s,
                         limit_concurrency=settings.limit_concurrency, **options)
        self.request_read_timeout_s = settings.request_read_timeout_s


class _Parser(h11.Connection):
    """h11's server side that keeps the error a request was refused for (uvicorn drops it), and
    lets the protocol refuse a parsed head (``admit``) the same way."""

    def __init__(self, protocol: GatewayProtocol) -> None:
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


class GatewayProtocol(H11Protocol):
    """uvicorn's h11 protocol with a read deadline per request, a header count limit, a
    connection limit answered at accept, and its refusals in the OpenAI error envelope."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Parser(self)
        self.max_concurrency = self.limit_concurrency
        self.limit_concurrency = None  # checked here, answered in the envelope
        self.read_timeout_s: float = getattr(config, "request_read_timeout_s", 60.0)
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_concurrency is not None and len(self.connections) > self.max_concurrency:
            self.refuse(Overloaded("the gateway is at its connection limit; retry later",
                                   code="server_overloaded"))
            return
        self.arm()  # the first request must come within the deadline too

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)

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
        size = len(request.target) + sum(len(name) + len(value) + 4
                                         for name, value in request.headers)
        if len(request.headers) > MAX_HEADERS or size > MAX_HEAD_BYTES:
            raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
        if self.max_concurrency is not None and len(self.tasks) >= self.max_concurrency:
            raise h11.RemoteProtocolError("too many requests in flight", error_status_hint=503)

    def send_400_response(self, msg: str) -> None:
        """A request h11 or ``admit`` refused, in the envelope; the connection is closed."""
        refused = self.conn.refused if isinstance(self.conn, _Parser) else None
        status = refused.error_status_hint if refused is not None else 400
        if status == 431:
            self.refuse(HeadTooLarge(
                f"the request head is larger than {MAX_HEAD_BYTES} bytes or has more than "
                f"{MAX_HEADERS} header fields", code="request_header_fields_too_large"))
        elif status == 503:
            self.refuse(Overloaded("the gateway is at its request limit; retry later",
                                   code="server_overloaded"))
        else:
            self.refuse(InvalidRequest("malformed HTTP request", code="invalid_http_request"))

    def arm(self) -> None:
        if self.deadline is None and not self.transport.is_closing():
            self.deadline = self.loop.call_later(self.read_timeout_s, self.expired)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

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
            self.transport.close()
            return
        if cycle is not None:  # the app waiting for the body gets http.disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        self.refuse(RequestTimeout(
            f"the request was not received within {self.read_timeout_s:g} s",
            code="request_timeout"))

    def refuse(self, error: GatewayError) -> None:
        """Writes the error's envelope straight to the socket and closes the connection."""
        body = json.dumps(error.envelope()).encode()
        head = (f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n").encode("ascii")
        self.transport.write(head + body)
        self.transport.close()


def serve(config: ServerConfig) -> None:
    """Runs the server as ``uvicorn.run`` does: one process, or ``config.workers`` spawned
    ones sharing the socket (the app is then an import string each worker loads)."""
    from uvicorn.supervisors import Multiprocess

    fit_file_limit(config)
    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


def fit_file_limit(config: ServerConfig) -> None:
    """Raises the soft limit on open files so each client connection, and an upstream one for
    it, fit (the workers inherit it); where the hard limit is lower, lowers
    ``limit_concurrency`` to what fits, so excess connections get 503, not a failed accept."""
    limit = config.limit_concurrency or 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * limit + FILES_BESIDES_CLIENTS
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        config.limit_concurrency = max(1, (soft - FILES_BESIDES_CLIENTS) // 2)
        log.warning("open file limit %d: server.limit_concurrency lowered from %d to %d",
                    soft, limit, config.limit_concurrency)
