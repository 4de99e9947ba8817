"""The gateway's HTTP server edge: uvicorn's protocols with the limits uvicorn does not set.

A client that has not authenticated yet must not hold a worker's memory or file descriptors:

- the request head (request line and headers) is at most ``MAX_HEAD_BYTES`` and
  ``MAX_HEADERS`` fields, else 431 (uvicorn bounds neither on httptools, and h11 only a head
  still incomplete);
- a whole request, head and body, must arrive within ``server.request_read_timeout_s`` of its
  first byte (of connecting, for a new connection), else 408 and the connection is closed;
- a worker serves at most ``server.limit_concurrency`` connections and requests at once; the
  next is answered 503 at once, before it reaches the app;
- a malformed request is answered in the OpenAI error envelope, not uvicorn's text/plain 400;
- a client that reads none of its answers for ``server.request_read_timeout_s`` (the write
  buffer full) is disconnected: it would hold its connection and request task for ever;
- on httptools, at most ``MAX_PIPELINE`` pipelined requests wait unanswered (then 503), and
  what follows an upgrade request is never parsed as a request (with a body it is a 400;
  without, it is answered as HTTP and the connection closed).

After such an answer the connection is closed lingering, as nginx does: the write side is
shut and what the client still sends is discarded unparsed, for at most 2 s and 1 MiB
(``proxy.edge_protocols.LINGER_S``, ``LINGER_MAX_BYTES``), so that closing on unread bytes
(the kernel answers them with a reset) does not destroy the answer before the client reads it.

These answers are written to the socket here, below the app: they reach no route, no audit
record and no request metric; each is counted in ``vilmo_edge_refusals_total`` by reason
(``proxy.edge_protocols.EDGE_REASONS``), through the app's lifespan state. The limits are
the same on both of uvicorn's parsers: httptools (C, the default; ``proxy.edge_httptools``)
and h11 (pure Python, where httptools is not installed; ``proxy.edge_protocols``). ``ServerConfig`` carries them to every ``--workers`` process (uvicorn
pickles its config for them); ``serve`` runs it as ``uvicorn.run`` would.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import sys
from typing import Any, Literal

import uvicorn

from proxy.edge_protocols import MAX_HEAD_BYTES, MAX_HEADERS, H11GatewayProtocol
from proxy.settings import ServerSettings

__all__ = ["MAX_HEADERS", "MAX_HEAD_BYTES", "PARSERS", "ServerConfig", "fit_file_limit",
           "protocol_class", "serve"]

Parser = Literal["httptools", "h11"]
PARSERS: tuple[Parser, ...] = ("httptools", "h11")
FILES_BESIDES_CLIENTS = 256
"""Descriptors a worker needs besides its client connections (upstream pool, store, logs)."""

log = logging.getLogger(__name__)


def default_parser() -> Parser:
    """httptools where it is installed (uvicorn's ``auto`` choice): with the limits it costs
    a few microseconds a request more than plain httptools, h11 about 75 (bench_server_edge);
    else h11."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def protocol_class(parser: Parser) -> type[asyncio.Protocol]:
    """The edge's protocol on ``parser`` (httptools' is imported only when asked for)."""
    if parser == "h11":
        return H11GatewayProtocol
    from proxy.edge_httptools import HttpToolsGatewayProtocol

    return HttpToolsGatewayProtocol


class ServerConfig(uvicorn.Config):
    """uvicorn's config on the gateway's protocol, with its limits (plain values: a spawned
    worker unpickles them)."""

    def __init__(self, app: Any, settings: ServerSettings, *, parser: Parser | None = None,
                 **options: Any) -> None:
        super().__init__(app, http=protocol_class(parser or default_parser()),
                         h11_max_incomplete_event_size=MAX_HEAD_BYTES,
                         ws="none",  # no WebSocket route: an upgrade would leave these limits
                         timeout_keep_alive=settings.keep_alive_s,
                         limit_concurrency=settings.limit_concurrency, **options)
        self.request_read_timeout_s = settings.request_read_timeout_s


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
