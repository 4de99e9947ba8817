"""The OpenAI-compatible HTTP surface: POST /v1/chat/completions (whole or streamed as SSE,
ending with ``data: [DONE]`` even after an error), GET /v1/models. Routes only parse, call
the batcher and shape the reply; errors use OpenAI's envelope with a 4xx/5xx status."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localllm.batcher import Batcher
from localllm.engine import MODEL_ID, Engine, GenRequest, GenResult
from localllm.render import STOP, RenderError, render

MAX_TOKENS_DEFAULT, MAX_TOKENS_LIMIT, MAX_N = 128, 2048, 8


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_body(message: str, kind: str = "invalid_request_error",
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What a chat request asks for, validated."""

    prompt: str
    max_tokens: int
    temperature: float
    stop: tuple[str, ...]
    n: int
    stream: bool
    include_usage: bool
    model: str

    def gen_request(self) -> GenRequest:
        return GenRequest(self.prompt, self.max_tokens, self.temperature, self.stop)


def parse_chat(body: Any, default_model: str) -> ChatCall:
    """A ChatCall from a decoded request body, or BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        prompt = render(body.get("messages") or [])
    except RenderError as exc:
        raise BadRequest(str(exc), "messages") from None
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = MAX_TOKENS_DEFAULT if max_tokens is None else max_tokens
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise BadRequest(f"max_tokens must be an integer in 1..{MAX_TOKENS_LIMIT}", "max_tokens")
    temperature = body.get("temperature", 1.0)
    temperature = 1.0 if temperature is None else temperature
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise BadRequest("temperature must be a number in 0..2", "temperature")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise BadRequest("stop must be a string or a list of strings", "stop")
    n = 1 if body.get("n") is None else body["n"]
    stream = bool(body.get("stream"))
    if not isinstance(n, int) or not 1 <= n <= MAX_N or (stream and n > 1):
        raise BadRequest(f"n must be in 1..{MAX_N} (1 when streaming)", "n")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatCall(prompt, max_tokens, float(temperature), (*STOP, *stop), n, stream,
                    include_usage, str(body.get("model") or default_model))


def usage(results: list[GenResult]) -> dict[str, int]:
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def create_app(engine: Engine, model_id: str = MODEL_ID, batch_size: int = 32) -> Starlette:
    """The server around an engine (the real model, or a fake in tests)."""
    batcher = Batcher(engine, batch_size)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.batcher = batcher
        yield
        batcher.close()

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "localllm"}]})

    async def chat(request: Request) -> Response:
        try:
            call = parse_chat(await request.json(), model_id)
        except json.JSONDecodeError:
            return JSONResponse(error_body("the request body is not valid JSON"), 400)
        except BadRequest as exc:
            return JSONResponse(error_body(str(exc), param=exc.param), 400)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if call.stream:
            return StreamingResponse(_sse(batcher, call, cid, created),
                                     media_type="text/event-stream")
        try:
            results = list(await asyncio.gather(*(batcher.complete(call.gen_request())
                                                  for _ in range(call.n))))
        except Exception as exc:  # noqa: BLE001 - any engine failure is a 500
            return JSONResponse(error_body(f"generation failed: {exc}", "server_error"), 500)
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": call.model,
            "choices": [{"index": i, "finish_reason": r.finish_reason,
                         "message": {"role": "assistant", "content": r.text}}
                        for i, r in enumerate(results)],
            "usage": usage(results)})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])], lifespan=lifespan)


async def _sse(batcher: Batcher, call: ChatCall, cid: str, created: int) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return "data: " + json.dumps({
            "id": cid, "object": "chat.completion.chunk", "created": created,
            "model": call.model, "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": finish}]}) + "\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for item in batcher.stream(call.gen_request()):
            if isinstance(item, GenResult):
                yield chunk({}, item.finish_reason)
                if call.include_usage:
                    yield "data: " + json.dumps({
                        "id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": call.model, "choices": [], "usage": usage([item])}) + "\n\n"
            else:
                yield chunk({"content": item})
    except Exception as exc:  # noqa: BLE001 - headers are sent: report in-band, end with DONE
        yield "data: " + json.dumps(error_body(f"generation failed: {exc}", "server_error")) \
            + "\n\n"
    yield "data: [DONE]\n\n"
