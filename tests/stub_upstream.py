"""A small OpenAI-compatible upstream for tests: a real HTTP server that records what it got.

Behaviour is chosen by the model name the gateway forwards:
  stub-status-NNN   answers with HTTP NNN and an OpenAI error envelope (the message echoes the
                    API key and any X-Upstream-Token header it received, as real providers
                    partly do, after ``error_prefix``, to test redaction), with
                    ``error_fields``; 429s say Retry-After: 7
  stub-slow         waits ``slow_seconds`` before answering
  stub-midstream-error  streams one chunk, then breaks the connection
  (any streamed)     with ``error_event`` set, an error event after the first word, then ends
  stub-stall        streams one word, then waits ``slow_seconds`` before the rest
  stub-bad-sse      streams one word, then an event that is not JSON, then the rest
  stub-bad-sse-first  the first event is not JSON
  stub-invalid-json answers 200 with a body that is not JSON (streams: as stub-bad-sse-first)
  stub-no-choices   answers 200 with ``choices: []`` (streams: chunks with no choices)
  anything else     answers ``reply`` (streamed word by word when asked to), or ``script``,
                    or ``raw_choices``; with ``bad_number`` set, the reply's choice (a stream:
                    the chunk of its second word) has that logprob, written as it is
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    client: tuple[str, int] | None = None
    """The caller's address and port: the same port means the same (reused) connection."""


@dataclass
class StubUpstream:
    reply: str = "Hello from the stub upstream. It was a calm and kind day."
    reply_when_warned: str | None = None
    """Answered instead of ``reply`` when the request says a draft "went against" values."""
    tool_arguments: str | None = None
    """When set, the reply is a tool call with these arguments."""
    script: list[dict[str, Any]] | None = None
    """When set, the reply has one choice per message here (fields: content, refusal,
    reasoning_content, reasoning, audio, function_call, tool_calls of type function or
    custom), each text streamed word by word, the choices interleaved."""
    raw_choices: Any = None
    """When set, the reply's ``choices`` exactly (malformed ones too); a stream sends them in
    one chunk (each ``message`` as ``delta``), then choice 0 finished."""
    bad_number: str | None = None
    """When set (``NaN``, ``Infinity``, ``1e400``: Python's json reads them, no client can),
    written as it is as a logprob of the reply, or of a stream's second word."""
    slow_seconds: float = 3.0
    chunk_delay: float = 0.0
    top_extra: dict[str, Any] = field(default_factory=dict)
    """Fields added to the top level of every reply and stream chunk (as an upstream may)."""
    choice_extra: dict[str, Any] = field(default_factory=dict)
    """Fields added to every choice of a reply or a ``script``/``reply`` stream's chunks."""
    logprobs: bool = False
    """When set, each reply's choice (each ``reply`` stream chunk's) has logprobs whose tokens
    spell its content, each with `` stab`` as an alternative (never the reply)."""
    usage_nulls: bool = False
    """As OpenAI with ``stream_options.include_usage``: ``"usage": null`` in every chunk
    before the usage chunk."""
    error_prefix: str = ""
    error_fields: dict[str, Any] = field(default_factory=dict)
    """Fields set in a ``stub-status-NNN`` error envelope (``param``, ``code``)."""
    error_body: str | None = None
    """When set, a ``stub-status-NNN`` error's whole body instead of the envelope, ``{key}``
    replaced by the key it was sent (a plain-text error page, or JSON of another shape)."""
    error_event: str | None = None
    """When set, a stream sends an error event with this message after its first word (as
    OpenAI-compatible upstreams report a failure mid-stream) and ends there."""
    received: list[Received] = field(default_factory=list)
    streams_closed_early: int = 0
    closed_early: list[str] = field(default_factory=list)
    """The models of the streams counted in ``streams_closed_early``."""
    streams_finished: int = 0
    url: str = ""
    """The base URL it is served at (set by the fixture that serves it)."""

    def reset(self) -> None:
        self.received.clear()
        self.reply = StubUpstream.reply
        self.reply_when_warned = None
        self.tool_arguments = None
        self.script = None
        self.raw_choices = None
        self.bad_number = None
        self.chunk_delay = 0.0
        self.usage_nulls = False
        self.top_extra = {}
        self.choice_extra = {}
        self.logprobs = False
        self.slow_seconds = StubUpstream.slow_seconds
        self.error_prefix = ""
        self.error_fields = {}
        self.error_body = None
        self.error_event = None
        self.streams_closed_early = 0
        self.closed_early.clear()
        self.streams_finished = 0

    def _reply_for(self, body: dict[str, Any]) -> str:
        warned = "went against" in json.dumps(body.get("messages", []))
        return self.reply_when_warned if warned and self.reply_when_warned else self.reply

    @property
    def last(self) -> Received:
        return self.received[-1]

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(Received(body, dict(request.headers),
                                      (request.client.host, request.client.port) if request.client else None))
        model = str(body.get("model", ""))
        if model.startswith("stub-status-"):
            status = int(model.rsplit("-", 1)[1])
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            token = request.headers.get("x-upstream-token")
            if self.error_body is not None:
                return Response(self.error_body.replace("{key}", key), status_code=status,
                                media_type="text/plain; charset=utf-8")
            error = f"{self.error_prefix}Incorrect API key provided: {key}" + (
                f" (token {token})" if token else "")
            return AsciiJSON({"error": {"message": error, "type": "stub_error",
                                           "param": None, "code": None,
                                           **self.error_fields}}, status_code=status,
                                headers={"retry-after": "7"} if status == 429 else None)
        if model == "stub-slow":
            await asyncio.sleep(self.slow_seconds)
        if model == "stub-no-choices":
            empty = {"id": "chatcmpl-empty", "object": "chat.completion", "created": 1,
                     "model": model, "choices": []}
            if body.get("stream"):
                return StreamingResponse(iter([f"data: {json.dumps(empty)}\n\n",
                                               "data: [DONE]\n\n"]),
                                         media_type="text/event-stream")
            return JSONResponse(empty)
        if model == "stub-invalid-json" and not body.get("stream"):
            return Response(b'{"id": "chatcmpl-broken", "choices": [', status_code=200,
                            media_type="application/json")
        created = int(time.time())
        completion_id = f"chatcmpl-stub{len(self.received)}"
        if self.raw_choices is not None:
            return self._raw(completion_id, created, model, bool(body.get("stream")))
        if body.get("stream"):
            chunks = (self._scripted(completion_id, created, model) if self.script is not None
                      else self._chunks(body, completion_id, created, model))
            return StreamingResponse(chunks, media_type="text/event-stream")
        if self.script is not None:
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": created,
                "model": model, "choices": [
                    {"index": i, "finish_reason": _finish(m),
                     "message": {"role": "assistant", "content": None, **m},
                     **self.choice_extra}
                    for i, m in enumerate(self.script)], **self.top_extra})
        message: dict[str, Any] = {"role": "assistant", "content": self._reply_for(body)}
        finish = "stop"
        if self.tool_arguments is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "act", "arguments": self.tool_arguments}}]}
            finish = "tool_calls"
        return Response(self._dumps({
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [self._with_bad_number({"index": 0, "finish_reason": finish,
                                               "message": message, **self._logprobs(message),
                                               **self.choice_extra})],
            "usage": {"prompt_tokens": 11, "completion_tokens": 13, "total_tokens": 24},
            "system_fingerprint": "fp_stub", **self.top_extra,
        }), media_type="application/json")

    def _logprobs(self, message: dict[str, Any]) -> dict[str, Any]:
        if not self.logprobs:
            return {}
        return {"logprobs": {"content": [
            {"token": t, "logprob": -0.5, "bytes": list(t.encode()),
             "top_logprobs": [{"token": " stab", "logprob": -9.0, "bytes": list(b" stab")}]}
            for t in _words(message.get("content") or "") if t], "refusal": None}}

    def _with_bad_number(self, choice: dict[str, Any]) -> dict[str, Any]:
        if self.bad_number is None:
            return choice
        return {**choice, "logprobs": {"content": [
            {"token": "Hi", "logprob": BAD_NUMBER_SLOT, "bytes": None, "top_logprobs": []}]}}

    def _dumps(self, data: dict[str, Any]) -> str:
        """JSON as ``json.dumps`` writes it, with ``bad_number`` in its slot."""
        text = json.dumps(data)
        return text.replace(f'"{BAD_NUMBER_SLOT}"', self.bad_number or "")

    def _raw(self, cid: str, created: int, model: str, stream: bool) -> Response:
        head = {"id": cid, "created": created, "model": model}
        if not stream:
            return AsciiJSON({**head, "object": "chat.completion", "choices": self.raw_choices})
        choices = [{("delta" if k == "message" else k): v for k, v in c.items()}
                   if isinstance(c, dict) else c for c in self.raw_choices] \
            if isinstance(self.raw_choices, list) else self.raw_choices
        events = [{**head, "object": "chat.completion.chunk", "choices": choices},
                  {**head, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        return StreamingResponse(iter([*(f"data: {json.dumps(e)}\n\n" for e in events),
                                       "data: [DONE]\n\n"]), media_type="text/event-stream")

    async def _chunks(self, body: dict[str, Any], cid: str, created: int, model: str,
                      ) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, bad: bool = False) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish,
                      **self._logprobs(delta), **self.choice_extra}
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [self._with_bad_number(choice) if bad else choice],
                    **self.top_extra}
            if self.usage_nulls and (body.get("stream_options") or {}).get("include_usage"):
                data["usage"] = None
            return f"data: {self._dumps(data)}\n\n"

        if model in ("stub-bad-sse-first", "stub-invalid-json"):
            yield "data: {not json\n\n"
        yield chunk({"role": "assistant", "content": ""})
        words = self._reply_for(body).split(" ")
        try:
            if self.tool_arguments is not None:
                words = []
                half = len(self.tool_arguments) // 2
                for i, part in enumerate((self.tool_arguments[:half],
                                          self.tool_arguments[half:])):
                    call = {"index": 0, "function": {"arguments": part}}
                    if i == 0:
                        call.update({"id": "call_1", "type": "function"})
                        call["function"]["name"] = "act"  # type: ignore[index]
                    yield chunk({"tool_calls": [call]})
            for i, word in enumerate(words):
                if model == "stub-midstream-error" and i == 1:
                    raise RuntimeError("stub upstream broke mid-stream")
                yield chunk({"content": word if i == 0 else " " + word}, bad=i == 1)
                if i == 0 and model == "stub-stall":
                    await asyncio.sleep(self.slow_seconds)
                if i == 0 and model == "stub-bad-sse":
                    yield "data: {not json\n\n"
                if i == 0 and self.error_event is not None:
                    error = {"error": {"message": self.error_event, "type": "server_error"}}
                    yield f"data: {json.dumps(error)}\n\n"
                    return
                await asyncio.sleep(self.chunk_delay)
        except (asyncio.CancelledError, GeneratorExit):
            self.streams_closed_early += 1
            self.closed_early.append(model)
            raise
        self.streams_finished += 1
        yield chunk({}, "tool_calls" if self.tool_arguments is not None else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": [],
                     "usage": {"prompt_tokens": 11, "completion_tokens": len(words),
                               "total_tokens": 11 + len(words)}, **self.top_extra}
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"


    async def _scripted(self, cid: str, created: int, model: str) -> AsyncIterator[str]:
        def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> str:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [{"index": index, "delta": delta,
                                                 "finish_reason": finish, **self.choice_extra}],
                    **self.top_extra}
            return f"data: {json.dumps(data)}\n\n"

        per_choice = [[chunk(i, d) for d in _deltas(m)] + [chunk(i, {}, _finish(m))]
                      for i, m in enumerate(self.script or [])]
        try:
            for row in zip_longest(*per_choice):
                for line in row:
                    if line is not None:
                        yield line
                        await asyncio.sleep(self.chunk_delay)
        except (asyncio.CancelledError, GeneratorExit):
            self.streams_closed_early += 1
            raise
        self.streams_finished += 1
        yield "data: [DONE]\n\n"


BAD_NUMBER_SLOT = "<bad number>"


class AsciiJSON(JSONResponse):
    """JSON as ``json.dumps`` writes it by default, as many upstreams do: every non-ASCII
    character escaped (so a lone surrogate can be sent, as ``\\ud800``), NaN as ``NaN``."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content).encode()


def _finish(message: dict[str, Any]) -> str:
    if "function_call" in message:
        return "function_call"
    return "tool_calls" if "tool_calls" in message else "stop"


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A scripted message as the deltas a provider streams: role, then each text word by word
    (an audio reply's transcript too, after a piece of its audio data; a function call's
    arguments and a custom tool call's input)."""
    out: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    for key in ("reasoning_content", "reasoning", "content", "refusal"):
        out += [{key: w} for w in _words(message.get(key) or "") if message.get(key)]
    audio = message.get("audio")
    if audio:
        out.append({"audio": {"id": audio["id"], "data": audio["data"], "transcript": ""}})
        out += [{"audio": {"transcript": w}} for w in _words(audio["transcript"])]
    call = message.get("function_call")
    if call:
        out.append({"function_call": {"name": call["name"], "arguments": ""}})
        out += [{"function_call": {"arguments": w}} for w in _words(call["arguments"])]
    for n, tool in enumerate(message.get("tool_calls") or []):
        kind = tool["type"]
        text = "arguments" if kind == "function" else "input"
        out.append({"tool_calls": [{"index": n, "id": tool["id"], "type": kind,
                                    kind: {"name": tool[kind]["name"], text: ""}}]})
        out += [{"tool_calls": [{"index": n, kind: {text: w}}]}
                for w in _words(tool[kind][text])]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """Runs an ASGI app under uvicorn on a loopback port in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop gracefully; a connection still open after 5 s is closed, so the server thread
        never outlives the test that started it."""
        self.server.should_exit = True
        self.thread.join(timeout=5)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=10)
