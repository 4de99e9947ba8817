"""uvicorn's httptools protocol (C, llhttp) with the server edge's limits (``proxy.server``).

llhttp buffers a header, or a trailer, of any size before its callback sees it, so the head is
bounded here from the bytes fed to the parser while one is incomplete, as well as from the
callbacks; the rest (deadline, envelope, connection limit) is ``EdgeLimits``'.

llhttp ends an upgrade request (``Connection: Upgrade``, or CONNECT) at its head, body or not,
and leaves what follows to the new protocol; there is none here, so those bytes are never parsed
as requests (they would be smuggled past whatever read the first): an upgrade request with a
body is refused, one without is answered as plain HTTP and the connection closed after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.edge_protocols import (
    LINGER_MAX_BYTES,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    EdgeLimits,
    EdgeReason,
    Overloaded,
    head_size,
    head_too_large,
    malformed,
    too_many_requests,
)
from proxy.errors import GatewayError, InvalidRequest

MAX_PIPELINE = 16
"""Requests parsed and queued behind the one being answered: one read of tiny pipelined
requests would otherwise queue thousands of request cycles (kilobytes each) for a client
that need not read its answers. The next is refused (503) after those are answered."""


def too_many_pipelined() -> Overloaded:
    return Overloaded(f"more than {MAX_PIPELINE} requests pipelined unanswered on one "
                      "connection; send the rest after their answers", code="server_overloaded")


def upgrade_with_body() -> InvalidRequest:
    return InvalidRequest("an upgrade request (Connection: Upgrade, or CONNECT) may not have "
                          "a body: no protocol upgrade is served here",
                          code="invalid_http_request")


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding"
               or (name == b"content-length" and value.strip().lstrip(b"0"))
               for name, value in headers)


Refusal = tuple[GatewayError, EdgeReason]
"""An answer the edge refuses a request with, and why (counted by that reason)."""


class Refused(Exception):
    """Raised in a parser callback to stop the parser; the protocol's ``refusal`` says why."""


class HttpToolsGatewayProtocol(EdgeLimits, HttpToolsProtocol):
    """uvicorn's httptools protocol with the edge's limits. The head is bounded as it
    arrives: while one is incomplete at most ``MAX_HEAD_BYTES`` of it reach the parser, and
    its fields are counted as parsed, so a refused head is never buffered past the limit."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None,
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.init_limits(config)
        self.awaiting_head = True
        """The bytes coming are (the rest of) a request head."""
        self.chunk_open = False
        """A body chunk's size line came and none of its data: the next bytes may be trailer
        fields, which llhttp buffers as it does head fields."""
        self.head_bytes = 0
        """Bytes fed while awaiting this head, or the trailer (either begun in a read that
        ended something else is counted from the next read: never more than it is)."""
        self.reading = False
        """A request has begun (its first byte parsed) and is not whole."""
        self.refusal: Refusal | None = None
        """What a callback refused the request for."""
        self.deferred: Refusal | None = None
        """A refusal that waits for the answers to the requests pipelined before it."""
        self.upgraded = False
        """An upgrade request was parsed: nothing after it is (the bytes dropped are bounded
        by ``LINGER_MAX_BYTES``, as while a refusal waits)."""

    def shutdown(self) -> None:
        if not self.stop():
            super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self.discard(data) or self.transport.is_closing():
            return  # refused: nothing more is parsed
        if self.deferred is not None or self.upgraded:
            self.discarded += len(data)  # nothing more is parsed; the connection will close
            if self.discarded > LINGER_MAX_BYTES:
                self.close_now()
            return
        self._unset_keepalive_if_required()
        while self.in_fields() and len(data) > MAX_HEAD_BYTES - self.head_bytes:
            room = MAX_HEAD_BYTES - self.head_bytes
            self.head_bytes = MAX_HEAD_BYTES
            if not self.parse(data[:room]):
                return
            if self.in_fields() and self.head_bytes == MAX_HEAD_BYTES:
                # the same head (or trailer), at the limit
                self.refuse(head_too_large(), "head_too_large")
                return
            data = data[room:]
        if self.in_fields():
            self.head_bytes += len(data)
        if self.parse(data) and (self.reading or (self.awaiting_head and self.head_bytes)):
            self.arm()  # a request has begun (or stray bytes came) and is not whole

    def in_fields(self) -> bool:
        """Whether the bytes coming may be header (or trailer) fields."""
        return self.awaiting_head or self.chunk_open

    def parse(self, data: bytes) -> bool:
        """Feeds the parser; False once the request is refused. llhttp stops at an upgrade
        request's head: what follows it is dropped, never parsed (``on_headers_complete``)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.refuse(*(self.refusal or (malformed(), "malformed")))
            return False
        return True

    def refuse(self, error: GatewayError, reason: EdgeReason) -> None:
        """A head refused behind requests not yet answered waits for their answers (written
        now, it would cut them off); nothing more is read meanwhile."""
        if self.awaiting_head and self.cycle is not None and not self.cycle.response_complete:
            self.deferred = (error, reason)
            self.disarm()
            self.flow.pause_reading()
            return
        if self.cycle is not None and self.cycle.response_started \
                and not self.cycle.response_complete:
            if not self.transport.is_closing():
                self.count_refusal(reason)
            self.close_now()  # an answer is on its way: the envelope would corrupt it
            return
        super().refuse(error, reason)

    def on_response_complete(self) -> None:
        if self.deferred is not None and not self.pipeline and not self.transport.is_closing():
            self.server_state.total_requests += 1
            super().refuse(*self.deferred)
            return
        super().on_response_complete()

    def on_message_begin(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINE:
            self.refusal = too_many_pipelined(), "pipeline_limit"
            raise Refused
        self.reading = True
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= MAX_HEADERS:
            self.refusal = head_too_large(), "head_too_large"
            raise Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Refuses a head too large (one begun in the read that ended another request is
        only measured whole), a request past the limit on requests in flight, or an upgrade
        request with a body (llhttp would leave the body unparsed: see the module). One
        without a body is served as plain HTTP, the connection closed after its answer."""
        if head_size(self.url, self.headers) > MAX_HEAD_BYTES:
            self.refusal = head_too_large(), "head_too_large"
            raise Refused
        if (self.max_concurrency is not None and len(self.tasks) >= self.max_concurrency
                and (self.cycle is None or self.cycle.response_complete)):
            self.refusal = too_many_requests(), "request_limit"
            raise Refused
        upgrade = self.parser.should_upgrade()
        if upgrade and declares_body(self.headers):
            self.refusal = upgrade_with_body(), "malformed"
            raise Refused
        self.awaiting_head = False
        super().on_headers_complete()
        if upgrade:
            self.upgraded = True
            self.cycle.keep_alive = False

    def on_chunk_header(self) -> None:
        self.chunk_open = True
        self.head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self.chunk_open = False
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.reading = False
        self.chunk_open = False
        self.awaiting_head = True
        self.head_bytes = 0
        self.disarm()
        super().on_message_complete()

    def expired(self) -> None:
        """The request was not whole in time: 408 unless its answer has begun (then the
        connection is only closed); a connection on which no request began is closed quietly,
        as an idle keep-alive one is. A pipelined head that stalls while the request before
        it is answered closes the connection after that answer."""
        self.deadline = None
        if self.transport.is_closing():
            return
        current = None if self.awaiting_head else self.cycle
        if not self.reading or (current is not None and current.response_started):
            self.close_now()
        elif current is None and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
        else:
            self.time_out(current)
