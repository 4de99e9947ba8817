"""HTTP routes. Each one parses, calls the pipeline, and maps the result to a response."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from proxy import pipeline
from proxy.actions import with_annotation
from proxy.audit import RequestRecord
from proxy.check import check_values
from proxy.errors import InvalidRequest
from proxy.middleware import Caller
from proxy.pipeline import Call, ChatReply, ChatStream
from proxy.protocol import (
    ChatCompletionRequest,
    Health,
    ModelCard,
    ModelList,
    ValuesCheckRequest,
)
from proxy.services import Services
from proxy.streaming import PreparedStream, prepare, sse_events
from vilmo.verdict import Verdict
from vilmo.yamlfile import dotted

router = APIRouter()
ModelT = TypeVar("ModelT", bound=BaseModel)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    raw = await read_json(request)
    body = validate(ChatCompletionRequest, raw)
    services: Services = request.app.state.services
    record = RequestRecord(request_id=f"req-{uuid.uuid4().hex[:16]}",
                           caller=caller_of(request).name)
    request.state.record = record
    result = await pipeline.chat(raw, bool(body.stream), caller_of(request),
                                 request.headers.get("x-vilmo-policy"), services, record)
    annotate = request.headers.get("x-vilmo-annotate", "").lower() == "body"
    if isinstance(result, ChatStream):
        prepared = await prepare(result, services, record, annotate)
        return StreamingResponse(sse_events(prepared, services, record),
                                 headers=stream_headers(prepared, record),
                                 media_type="text/event-stream")
    completion = result.completion
    if annotate:
        completion = with_annotation(completion, result.verdict, result.regenerations)
    return JSONResponse(completion, headers=reply_headers(result, record))


@router.post("/v1/values/check")
async def values_check(request: Request) -> dict[str, Any]:
    body = validate(ValuesCheckRequest, await read_json(request))
    return await check_values(body, caller_of(request), request.headers.get("x-vilmo-policy"),
                              request.app.state.services)


@router.get("/v1/models")
async def models(request: Request) -> ModelList:
    services: Services = request.app.state.services
    return ModelList(data=[ModelCard(id=name) for name in services.upstream.model_names()])


@router.get("/healthz")
async def healthz(request: Request) -> Health:
    services: Services = request.app.state.services
    return Health(policies=services.policies.names(), models=services.upstream.model_names())


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    return Response(services.metrics.exposition(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


def caller_of(request: Request) -> Caller:
    caller: Caller = request.scope["state"]["caller"]
    return caller


def base_headers(call: Call, record: RequestRecord, guard: str) -> dict[str, str]:
    return {"x-vilmo-policy": call.policy.name,
            "x-vilmo-principles": ",".join(call.instruction.principle_ids),
            "x-vilmo-stakes": ",".join(call.instruction.stakes),
            "x-vilmo-guard": guard, "x-request-id": record.request_id}


def verdict_headers(verdict: Verdict | None, input_verdict: Verdict | None,
                    regenerations: int) -> dict[str, str]:
    headers = {}
    if verdict is not None:
        headers["x-vilmo-violations"] = ",".join(verdict.violation_ids)
        headers["x-vilmo-action"] = verdict.action.value
    if input_verdict is not None:
        headers["x-vilmo-input-violations"] = ",".join(input_verdict.violation_ids)
    if regenerations:
        headers["x-vilmo-regenerations"] = str(regenerations)
    return headers


def reply_headers(result: ChatReply, record: RequestRecord) -> dict[str, str]:
    return {**base_headers(result.call, record, result.guard),
            **verdict_headers(result.verdict, result.input_verdict, result.regenerations)}


def stream_headers(prepared: PreparedStream, record: RequestRecord) -> dict[str, str]:
    stream = prepared.stream
    return {**base_headers(stream.call, record, prepared.guard),
            **verdict_headers(prepared.verdict, stream.input_verdict, prepared.regenerations),
            "x-vilmo-stream-mode": prepared.mode}


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}",
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    try:  # JSON escapes can smuggle lone surrogates, which no upstream can be sent
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"the request body is not valid Unicode: {exc.reason}",
                             code="invalid_json") from None
    return data


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = dotted(first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}" if where else first["msg"],
                             param=where or None, code="invalid_request") from None
