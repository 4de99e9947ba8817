"""The direct path's connections to its upstreams: httpx clients, each with a small pool.

httpcore's pool walks all of its connections on every request sent and every response closed:
it asks each idle one whether the server closed it (a poll, and anyio building the socket's
attribute table), and for each idle one counts all of them again (quadratic). At c=32 on one
pool of 32 connections that walk was about a third of a pass-through request's CPU in the
gateway (cProfile, ``bench/bench_passthrough_cpu.py``; pools of 8, 4 and 2 cost it 2.8, 2.3 and
2.1 ms a request against 6.1 ms on one pool). ``ShardedClient`` splits the
``upstream.max_connections`` over pools of at most ``SHARD_CONNECTIONS``: a request goes to the
first pool with a free connection (so a quiet gateway reuses the first pool's connections), and
when every pool is busy to the one with the fewest waiting. In all never more connections than
``max_connections``, and a request waits only when all of them are in use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

SHARD_CONNECTIONS = 2
"""The most connections of one pool (httpcore walks them all on each request and response;
the default 256 connections make 128 pools, sharing one TLS context)."""


class ShardedClient:
    """``httpx.AsyncClient``'s ``build_request``, ``send`` (streamed) and ``aclose`` over
    several clients of at most ``SHARD_CONNECTIONS`` connections, ``size`` in all."""

    def __init__(self, size: int, keepalive_s: float, **options: Any) -> None:
        if "verify" not in options:  # one TLS context for all (each costs ~25 ms to load)
            options["verify"] = httpx.create_ssl_context(
                trust_env=options.get("trust_env", True))
        shards = -(-size // SHARD_CONNECTIONS)
        sizes = [size // shards + (1 if at < size % shards else 0) for at in range(shards)]
        self.clients = [httpx.AsyncClient(
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n,
                                keepalive_expiry=keepalive_s), **options) for n in sizes]
        self.sizes = tuple(sizes)
        self.free = sizes  # each pool's connections not taken by a response (< 0: waiting)

    @property
    def is_closed(self) -> bool:
        return all(client.is_closed for client in self.clients)

    def build_request(self, method: str, url: str, **options: Any) -> httpx.Request:
        return self.clients[0].build_request(method, url, **options)

    def pick(self) -> int:
        """The first pool with a free connection, else the one with the fewest waiting."""
        free = self.free
        for at, left in enumerate(free):
            if left > 0:
                return at
        return free.index(max(free))

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response's head (its body streamed); its pool's place is given back when the
        response is closed."""
        at = self.pick()
        self.free[at] -= 1
        try:
            response = await self.clients[at].send(request, stream=True)
        except BaseException:
            self.free[at] += 1
            raise
        if response.is_closed:  # read whole already: nothing holds the connection
            self.free[at] += 1
        else:
            response.stream = _Released(response.stream, self, at)
        return response

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class _Released(httpx.AsyncByteStream):
    """A response's body stream that gives its pool's place back once, when closed."""

    def __init__(self, stream: Any, pools: ShardedClient, at: int) -> None:
        self.stream, self.pools, self.at, self.open = stream, pools, at, True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self.stream:
            yield piece

    async def aclose(self) -> None:
        try:
            await self.stream.aclose()
        finally:
            if self.open:
                self.open = False
                self.pools.free[self.at] += 1
