"""The direct path to OpenAI-compatible upstreams (issue 16): which models take it, what it
sends, how it reads replies and streams (bounded, relayed as they came), and that the app's
lifespan closes its pooled client. The gateway-facing suites run over both paths
(``conftest.BOTH_PATHS``); these are the direct path's own cases, without models loaded."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import UPSTREAM_SECRET, gateway_config_dict
from fakes import fake_services
from starlette.testclient import TestClient
from stub_upstream import ServerThread, StubUpstream

from proxy.app import create_app
from proxy.direct import DirectUpstream, SplitUpstream, build_upstream, direct_routes
from proxy.errors import GatewayError, Redactor, UpstreamFailed
from proxy.relay import RawChunk, SSEReader, wire_bytes
from proxy.settings import ConfigError, GatewayConfig
from proxy.sse import event
from proxy.stages import TimedUpstream
from proxy.upstream import LiteLLMUpstream, open_stream
from vilmo.instruct.principles import PrincipleBank

ASK = [{"role": "user", "content": "Hello there."}]


def config_of(stub_url: str, tmp_path: Path, direct: str = "auto", **extra: Any,
              ) -> GatewayConfig:
    data = gateway_config_dict(stub_url, tmp_path)
    data["upstream"] = {"direct": direct, **extra.pop("upstream", {})}
    return GatewayConfig.model_validate({**data, **extra})


def test_auto_takes_openai_entries_with_a_base_and_leaves_the_rest_to_litellm(
        tmp_path: Path) -> None:
    base = {"api_base": "http://127.0.0.1:1/v1", "api_key": "k"}
    config = GatewayConfig.model_validate({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a", **base}},
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-x"}},
        {"model_name": "no-base", "litellm_params": {"model": "openai/gpt-4o-mini"}},
        {"model_name": "with-fallback", "litellm_params": {"model": "openai/b", **base}},
        {"model_name": "odd", "litellm_params": {"model": "openai/c", "rpm": 5, **base}},
        {"model_name": "twice", "litellm_params": {"model": "openai/d", **base}},
        {"model_name": "twice", "litellm_params": {"model": "openai/e", **base}},
    ], "router_settings": {"fallbacks": [{"with-fallback": ["a-backup"]}]}})
    assert [r.name for r in direct_routes(config)] == ["a"]
    config.upstream.direct = "never"
    assert direct_routes(config) == []
    config.upstream.direct = "always"
    with pytest.raises(ConfigError) as caught:
        direct_routes(config)
    assert "'claude' cannot go direct: its provider is not openai/" in str(caught.value)
    assert "fallbacks" in str(caught.value) and "several deployments" in str(caught.value)


def test_retries_keep_a_model_with_litellm() -> None:
    config = GatewayConfig.model_validate({"model_list": [
        {"model_name": "a", "litellm_params": {"model": "openai/a", "api_base": "http://x/v1"}}],
        "router_settings": {"num_retries": 2}})
    assert direct_routes(config) == []


def test_split_upstream_resolves_names_in_config_order(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate({"model_list": [
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-x"}},
        {"model_name": "*", "litellm_params": {"model": "openai/*", "api_base": "http://x/v1"}},
    ]})
    upstream = build_upstream(config, Redactor())
    assert isinstance(upstream, SplitUpstream)
    assert isinstance(upstream.pick("claude"), LiteLLMUpstream)
    assert isinstance(upstream.pick("gpt-x"), DirectUpstream)
    assert upstream.model_names() == ["claude", "*"]
    route = upstream.direct.routes["*"]
    assert route.upstream_model("gpt-x") == "gpt-x" and route.url == "http://x/v1/chat/completions"


def test_only_the_config_key_and_headers_are_sent(stub: StubUpstream, tmp_path: Path) -> None:
    config = config_of(stub.url, tmp_path)
    config.model_list[0].litellm_params["extra_headers"] = {"X-Org": "acme"}
    upstream = build_upstream(config, Redactor(config.secrets()))

    async def call() -> None:
        await upstream.complete({"model": "stub", "messages": ASK,
                                 "extra_body": {"metadata": {"p": "x"}}})
        await upstream.aclose()  # type: ignore[attr-defined]

    asyncio.run(call())
    assert stub.last.headers["authorization"] == f"Bearer {UPSTREAM_SECRET}"
    assert stub.last.headers["x-org"] == "acme"
    assert stub.last.body == {"model": "stub-model", "messages": ASK, "metadata": {"p": "x"},
                              "stream": False}


def run_direct(upstream: Any, params: dict[str, Any], stream: bool = False) -> Any:
    async def call() -> Any:
        try:
            if stream:
                return [c async for c in upstream.stream(params)]
            return await upstream.complete(params)
        finally:
            await upstream.aclose()

    return asyncio.run(call())


def test_replies_and_streams_are_bounded(stub: StubUpstream, tmp_path: Path) -> None:
    config = config_of(stub.url, tmp_path, upstream={"max_response_bytes": 300})
    for stream in (False, True):
        with pytest.raises(UpstreamFailed) as caught:
            run_direct(build_upstream(config, Redactor()),
                       {"model": "stub", "messages": ASK}, stream)
        assert caught.value.status == 502 and caught.value.code == "upstream_too_large"


def test_streamed_chunks_are_relayed_as_the_upstream_sent_them(stub: StubUpstream,
                                                              tmp_path: Path) -> None:
    chunks = run_direct(build_upstream(config_of(stub.url, tmp_path), Redactor()),
                        {"model": "stub", "messages": ASK}, stream=True)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == stub.reply
    first = wire_bytes(chunks[0])
    assert first is not None and first.startswith(b'data: {"id": "chatcmpl-stub')  # the stub's
    assert json.loads(first[6:]) == chunks[0]  # spacing, not the gateway's compact encoding


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def read_sse(*parts: bytes, max_bytes: int = 10_000) -> list[Any]:
    async def collect() -> list[Any]:
        reader = SSEReader("m", max_bytes, Redactor(["sk-secret-1234"]))
        return [c async for c in reader.chunks(pieces(*parts))]

    return asyncio.run(collect())


def test_sse_events_split_across_reads_with_crlf_and_comments() -> None:
    one = b'{"id":"a","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}'
    chunks = read_sse(b": keep-alive\r\n\r\ndata: " + one[:10], one[10:] + b"\r\n\r\n",
                      b"data: [DONE]\n\n", b"data: {\"ignored\": true}\n\n")
    assert len(chunks) == 1 and chunks[0]["id"] == "a"
    assert wire_bytes(chunks[0]) == b"data: " + one + b"\n\n"


def test_a_changed_chunk_is_encoded_again() -> None:
    chunk = RawChunk({"id": "a", "choices": []}, b'{"id": "a", "choices": []}')
    chunk["model"] = "m"
    assert chunk.raw is None and wire_bytes(chunk) is None  # type: ignore[arg-type]
    assert event(chunk) == b'data: {"id":"a","choices":[],"model":"m"}\n\n'


@pytest.mark.parametrize("body, code", [
    (b"data: not json\n\n", "upstream_malformed"),
    (b"data: [1, 2]\n\n", "upstream_malformed"),
    (b'data: {"error": {"message": "overloaded, key sk-secret-1234"}}\n\n', "upstream_error"),
    (b"data: " + b"x" * 20_000 + b"\n\n", "upstream_too_large"),
])
def test_bad_streams_are_502s(body: bytes, code: str) -> None:
    with pytest.raises(GatewayError) as caught:
        read_sse(body)
    assert caught.value.status == 502 and caught.value.code == code
    assert "sk-secret-1234" not in caught.value.message
    assert "overloaded" not in caught.value.message  # the upstream's text: logged only


def logprob_event(number: bytes, content: bytes = b"x") -> bytes:
    """One event the reader would relay as its bytes (one line, its choice finished; its
    token spells its content)."""
    return (b'{"id":"a","choices":[{"index":0,"delta":{"content":"' + content + b'"},'
            b'"finish_reason":"stop","logprobs":{"content":[{"token":"' + content + b'","logprob":'
            + number
            + b',"bytes":null,"top_logprobs":[]}]}}]}')


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_an_event_with_a_number_that_is_not_finite_is_a_502(number: bytes) -> None:
    """Python's json reads these (``1e400`` as inf); no client can. Before the fix such an
    event was relayed as the bytes it came as."""
    with pytest.raises(GatewayError) as caught:
        read_sse(b"data: " + logprob_event(number) + b"\n\n")
    assert caught.value.status == 502 and caught.value.code == "upstream_malformed"
    assert number.decode() in caught.value.message


def test_finite_numbers_and_the_words_as_text_are_relayed_as_they_came() -> None:
    one = logprob_event(b"-0.25e1", content=b"NaN Infinity 1e400")
    chunks = read_sse(b"data: " + one + b"\n\n")
    assert wire_bytes(chunks[0]) == b"data: " + one + b"\n\n"
    assert chunks[0]["choices"][0]["logprobs"]["content"][0]["logprob"] == -2.5


UNFINISHED = b'data: {"id":"a","choices":[{"index":0,"delta":{"content":"half"}}]}\n\n'


@pytest.mark.parametrize("body", [UNFINISHED, UNFINISHED + b"data: [DONE]\n\n",
                                  b'data: {"id":"a","choices":[]}\n\ndata: [DONE]\n\n'])
def test_a_stream_that_ends_before_a_finish_reason_is_a_502(body: bytes) -> None:
    """A stream cut short (the body ended, or [DONE] came, with no choice finished) passed as
    a 200 with a partial reply before the fix; LiteLLM's Router fails it, and so does this."""
    with pytest.raises(GatewayError) as caught:
        read_sse(body)
    assert caught.value.status == 502 and caught.value.code == "upstream_malformed"
    assert "finish_reason" in caught.value.message


def test_open_stream_holds_chunks_without_choices_until_one_has_some() -> None:
    """A stream whose first chunk has no choices and which then fails gave a 200 and an error
    event (the Router's ``choices: []`` stream in the live modes) before the fix: the failure
    now comes before the headers, as a 502."""
    empty: dict[str, Any] = {"id": "a", "choices": []}
    word: dict[str, Any] = {"id": "a", "choices": [{"index": 0, "delta": {"content": "x"}}]}

    class Upstream:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        async def stream(self, params: Any) -> AsyncIterator[Any]:
            yield empty
            if self.fail:
                raise UpstreamFailed("no finish_reason", code="upstream_malformed")
            yield word

    async def opened(fail: bool) -> AsyncIterator[Any]:
        return await open_stream(Upstream(fail), {})  # type: ignore[arg-type]

    async def read() -> list[Any]:
        return [c async for c in await opened(fail=False)]

    with pytest.raises(UpstreamFailed):  # when the stream is opened, not later
        asyncio.run(opened(fail=True))
    assert asyncio.run(read()) == [empty, word]


REPLY = json.dumps({"id": "x", "object": "chat.completion", "choices": [
    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
}).encode()
ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
          % (len(REPLY), REPLY))


def requests_to(script: list[str]) -> tuple[list[str], Any]:
    """The requests an upstream received, and the gateway's answers to ``len(script)`` plain
    requests sent one after the other over the direct path. The upstream answers its n-th
    request by ``script[n]`` (past its end: ``answer``): ``answer`` (keeping the connection
    alive), ``close`` (it ends the connection without a response), ``reset`` (after 0.2 s of
    "work", an RST). Each request is read whole before the upstream acts."""
    received: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            action = script[len(received)] if len(received) < len(script) else "answer"
            received.append(action)
            if action == "answer":
                writer.write(ANSWER)
                await writer.drain()
                continue
            if action == "reset":
                await asyncio.sleep(0.2)  # the upstream works on it, then crashes
                writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            break
        writer.close()

    async def calls() -> list[Any]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = GatewayConfig.model_validate({"model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/m", "api_base": f"http://127.0.0.1:{port}/v1"}}]})
        upstream = build_upstream(config, Redactor())
        answers: list[Any] = []
        try:
            for _ in script:
                try:
                    answers.append(await upstream.complete({"model": "m", "messages": ASK}))
                except GatewayError as exc:
                    answers.append(exc)
        finally:
            await upstream.aclose()  # type: ignore[attr-defined]
            server.close()
        return answers

    answers = asyncio.run(calls())
    return received, answers


def test_a_pooled_connection_closed_as_it_is_reused_is_tried_once_more() -> None:
    """A pooled connection the upstream closes as it is reused (its keep-alive ran out) gave
    a 502 (seen in bench/compare_litellm.py at c=32); one fresh try answers."""
    received, answers = requests_to(["answer", "close"])
    assert received == ["answer", "close", "answer"]  # the third: on a new connection
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["ok", "ok"]


@pytest.mark.parametrize("script", [["reset"], ["close"], ["answer", "reset"]],
                         ids=["new-reset", "new-closed", "pooled-reset"])
def test_a_request_the_upstream_may_have_worked_on_is_sent_once(script: list[str]) -> None:
    """An upstream that read the request and then failed may have run it: sending it again
    runs (and bills) it twice. Before the fix ``send`` retried any read or protocol error,
    however late: an upstream that worked 0.2 s, then reset, got the request twice. Only the
    stale keep-alive case above is retried."""
    received, answers = requests_to(script)
    assert received == script
    assert isinstance(answers[-1], UpstreamFailed) and answers[-1].status == 502


def test_a_reply_trickled_past_the_timeout_is_a_504() -> None:
    """httpx's timeouts bound each read, not the whole: an upstream that sent its body a byte
    every 0.1 s held a plain request as long as it liked (here 3 s, past a 0.5 s timeout, and
    the reply was then served). The deployment's timeout is the whole request's deadline."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(REPLY))
        try:
            for i in range(30):  # 3 s, each read well within the timeout
                writer.write(REPLY[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.write(REPLY[30:])
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def call() -> Any:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = GatewayConfig.model_validate({"model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/m", "api_base": f"http://127.0.0.1:{port}/v1", "timeout": 0.5}}]})
        upstream = build_upstream(config, Redactor())
        try:
            return await upstream.complete({"model": "m", "messages": ASK})
        except GatewayError as exc:
            return exc
        finally:
            await upstream.aclose()  # type: ignore[attr-defined]
            server.close()

    answer = asyncio.run(call())
    assert isinstance(answer, GatewayError) and answer.status == 504
    assert answer.code == "upstream_timeout"


def test_the_lifespan_closes_the_pooled_client(stub: StubUpstream, tmp_path: Path,
                                               policy_dir: Path, bank: PrincipleBank) -> None:
    config = config_of(stub.url, tmp_path)
    upstream = build_upstream(config, Redactor())
    assert isinstance(upstream, SplitUpstream) and upstream.router is None  # no LiteLLM at all
    services = fake_services(policy_dir, bank)
    services.config.store.path = tmp_path / "state.db"
    services.upstream = TimedUpstream(upstream)
    app = create_app(services.config, lambda c: services)
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={"model": "stub", "messages": ASK},
                            headers={"X-Vilmo-Policy": "g-allow-buffer"})
        assert reply.status_code == 200, reply.text
        assert not upstream.direct.client.is_closed
    assert upstream.direct.client.is_closed


def test_openai_usage_nulls_are_relayed_as_they_came(stub: StubUpstream, tmp_path: Path,
                                                    policy_dir: Path, bank: PrincipleBank,
                                                    ) -> None:
    """The gateway asks every stream for usage, and OpenAI then puts ``"usage": null`` in every
    chunk: a null hides nothing, so the chunk goes out as the upstream sent it (not encoded
    again), and only the usage chunk the client did not ask for is dropped."""
    stub.usage_nulls = True
    services = fake_services(policy_dir, bank)
    services.config.store.path = tmp_path / "state.db"
    services.upstream = TimedUpstream(build_upstream(config_of(stub.url, tmp_path), Redactor()))
    body = {"model": "stub", "messages": ASK, "stream": True}
    with ServerThread(create_app(services.config, lambda c: services)) as server:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                          headers={"X-Vilmo-Policy": "g-allow-monitor"}) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: {")]
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        parsed = list(client.chat.completions.create(
            model="stub", messages=[{"role": "user", "content": "Hello there."}], stream=True,
            extra_headers={"X-Vilmo-Policy": "g-allow-monitor"}))
    relayed = [line for line in events if '"choices": [{' in line]
    assert len(relayed) == len(stub.reply.split()) + 2  # role, each word, finish
    assert all(line.startswith('data: {"id": "chatcmpl-stub') and '"usage": null' in line
               for line in relayed)  # the stub's spacing: the upstream's bytes
    assert not any('"usage":{' in line or '"usage": {' in line for line in events)
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == stub.reply
    assert all(c.usage is None for c in parsed)


def test_a_finished_stream_leaves_its_connection_in_the_pool(stub: StubUpstream,
                                                             tmp_path: Path) -> None:
    """The body is read to its end after ``[DONE]``, so the connection is reused: a stream
    closed before then costs its upstream a new connection for every stream."""
    upstream = build_upstream(config_of(stub.url, tmp_path), Redactor())

    async def streams() -> None:
        try:
            for _ in range(3):
                assert [c async for c in upstream.stream({"model": "stub", "messages": ASK})]
            await upstream.complete({"model": "stub", "messages": ASK})
        finally:
            await upstream.aclose()  # type: ignore[attr-defined]

    asyncio.run(streams())
    assert len({r.client for r in stub.received}) == 1, [r.client for r in stub.received]


def test_an_upstreams_cookies_are_not_kept_for_later_requests(tmp_path: Path) -> None:
    """The direct path's one pooled client kept a cookie an upstream set (a load balancer's,
    an upstream's session) and sent it with every later request, whoever made it: state
    shared between callers that no one asked for. Cookies are neither kept nor sent."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    cookies_seen: list[str | None] = []

    async def chat(request: Request) -> JSONResponse:
        cookies_seen.append(request.headers.get("cookie"))
        reply = {"id": "c", "object": "chat.completion", "created": 1, "model": "stub-model",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Hello."}}]}
        return JSONResponse(reply, headers={"set-cookie": "session=tenant-a; Path=/"})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        upstream = build_upstream(config_of(server.url, tmp_path), Redactor())

        async def twice() -> None:
            try:
                for _ in range(2):
                    await upstream.complete({"model": "stub", "messages": ASK})
            finally:
                await upstream.aclose()  # type: ignore[attr-defined]

        asyncio.run(twice())
    assert cookies_seen == [None, None]


@pytest.mark.parametrize("stream", [False, True])
def test_litellms_clients_keep_no_upstream_cookies(tmp_path: Path, stream: bool) -> None:
    """The Router path (LiteLLM's openai client, cached per deployment) kept a cookie an
    upstream set and sent it with the next caller's request, as the direct path once did."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    cookies_seen: list[str | None] = []
    setting = {"set-cookie": "session=tenant-a; Path=/"}

    async def chat(request: Request) -> Response:
        cookies_seen.append(request.headers.get("cookie"))
        if (await request.json()).get("stream"):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1,
                     "model": "stub-model", "choices": [{"index": 0, "finish_reason": "stop",
                                                         "delta": {"content": "Hello."}}]}
            body = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
            return Response(body, media_type="text/event-stream", headers=setting)
        reply = {"id": "c", "object": "chat.completion", "created": 1, "model": "stub-model",
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Hello."}}]}
        return JSONResponse(reply, headers=setting)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        upstream = build_upstream(config_of(server.url, tmp_path, direct="never"), Redactor())
        assert isinstance(upstream, LiteLLMUpstream)

        async def twice() -> None:
            for _ in range(2):
                if stream:
                    assert [c async for c in upstream.stream({"model": "stub", "messages": ASK})]
                else:
                    await upstream.complete({"model": "stub", "messages": ASK})

        asyncio.run(twice())
    assert cookies_seen == [None, None]
