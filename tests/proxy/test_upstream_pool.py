"""The direct path's sharded connection pools (``proxy.upstream_pool``): small pools (httpcore
walks every connection of a pool on each request), never more connections than
``upstream.max_connections`` in all, a request waiting only when all are in use, and each
response's place given back however it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import gateway_config_dict
from stub_upstream import StubUpstream

from proxy.direct import DirectUpstream, direct_routes
from proxy.errors import Redactor
from proxy.settings import GatewayConfig
from proxy.upstream_pool import SHARD_CONNECTIONS, ShardedClient


def direct(stub: StubUpstream, tmp_path: Path, size: int) -> DirectUpstream:
    data = gateway_config_dict(stub.url, tmp_path)
    data["upstream"] = {"direct": "auto", "max_connections": size}
    config = GatewayConfig.model_validate(data)
    return DirectUpstream(direct_routes(config), config, Redactor())


@pytest.mark.parametrize("size", [1, 7, 8, 9, 20, 256])
def test_the_connections_are_split_over_small_pools(size: int) -> None:
    pools = ShardedClient(size, 5.0)
    assert sum(pools.sizes) == size and max(pools.sizes) <= SHARD_CONNECTIONS
    assert max(pools.sizes) - min(pools.sizes) <= 1


def test_the_pools_share_one_tls_context() -> None:
    """Loading the CA bundle costs ~25 ms: 32 pools (256 connections) each loading it added
    0.8 s to a worker's start."""
    pools = ShardedClient(256, 5.0, trust_env=False)  # the default max_connections
    contexts = {id(c._transport._pool._ssl_context) for c in pools.clients}  # type: ignore[attr-defined]
    assert len(pools.clients) == 256 // SHARD_CONNECTIONS and len(contexts) == 1


def test_the_direct_upstream_keeps_small_pools(stub: StubUpstream, tmp_path: Path) -> None:
    """Before the fix one pool held every connection (256 by default)."""
    upstream = direct(stub, tmp_path, 32)
    assert isinstance(upstream.client, ShardedClient)
    assert upstream.client.sizes == (SHARD_CONNECTIONS,) * (32 // SHARD_CONNECTIONS)
    asyncio.run(upstream.aclose())
    assert upstream.client.is_closed


def test_concurrent_calls_open_at_most_max_connections_and_all_finish(
        stub: StubUpstream, tmp_path: Path) -> None:
    stub.slow_seconds = 0.2
    upstream = direct(stub, tmp_path, 10)

    async def calls() -> list[float]:
        async def one() -> float:
            started = asyncio.get_running_loop().time()
            await upstream.complete({"model": "stub-slow", "messages": [
                {"role": "user", "content": "Hi."}]})
            return asyncio.get_running_loop().time() - started

        try:
            return await asyncio.gather(*(one() for _ in range(20)))
        finally:
            await upstream.aclose()

    spent = asyncio.run(calls())
    assert len(stub.received) == 20
    assert len({r.client for r in stub.received}) <= 10
    # 20 calls on 10 connections: the second ten waited for the first (two rounds, not one)
    assert max(spent) >= 0.38
    assert sorted(spent)[9] < 0.38  # and the first ten all went at once (ten connections)
    assert upstream.client.free == list(upstream.client.sizes) and sum(upstream.client.free) == 10


def test_a_quiet_gateway_reuses_the_first_pools_connection(
        stub: StubUpstream, tmp_path: Path) -> None:
    upstream = direct(stub, tmp_path, 32)

    async def calls() -> None:
        try:
            for _ in range(3):
                await upstream.complete({"model": "stub", "messages": [
                    {"role": "user", "content": "Hi."}]})
                assert [c async for c in upstream.stream({"model": "stub", "messages": [
                    {"role": "user", "content": "Hi."}]})]
        finally:
            await upstream.aclose()

    asyncio.run(calls())
    assert len({r.client for r in stub.received}) == 1
    assert upstream.client.free == list(upstream.client.sizes)


class Body(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"ok": true}'


def test_a_failed_send_and_an_unread_response_give_their_place_back() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fail":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, stream=Body())  # a body read as it comes, not read yet

    n = SHARD_CONNECTIONS
    pools = ShardedClient(2 * n, 5.0)
    for client in pools.clients:
        client._transport = httpx.MockTransport(answer)  # no socket needed

    async def run() -> None:
        with pytest.raises(httpx.ConnectError):
            await pools.send(pools.build_request("GET", "http://upstream/fail"))
        assert pools.free == [n, n]
        first = await pools.send(pools.build_request("GET", "http://upstream/ok"))
        assert pools.free == [n - 1, n]  # the first pool with a free connection
        rest = [await pools.send(pools.build_request("GET", "http://upstream/ok"))
                for _ in range(2 * n)]
        assert pools.free == [-1, 0]  # all busy: the last went to the pool with fewest waiting
        await first.aclose()
        await first.aclose()  # a second close gives nothing back twice
        await rest[0].aread()
        for response in rest:
            await response.aclose()
        assert pools.free == [n, n]
        await pools.aclose()

    asyncio.run(run())
