"""HTTP routes. Each one parses, calls the pipeline, and maps the result to a response."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from proxy import pipeline
from proxy.actions import with_annotation
from proxy.admission import admit, parse_body
from proxy.audit import RequestRecord, new_request_id
from proxy.check import check_values
from proxy.disconnect import unless_disconnected
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
    services: Services = request.app.state.services
    record = RequestRecord(request_id=new_request_id(), caller=caller_of(request).name)
    request.state.record = record  # from here on every outcome is recorded, 400s too
    raw = await read_json(request)
    body = validate(ChatCompletionRequest, raw)
    params = admit(raw, body, services.config)
    annotate = request.headers.get("x-vilmo-annotate", "").lower() == "body"

    async def answer() -> ChatReply | PreparedStream:
        result = await pipeline.chat(params, bool(body.stream), caller_of(request),
                                     request.headers.get("x-vilmo-policy"), services, record)
        if isinstance(result, ChatStream):
            return await prepare(result, services, record, annotate)
        return result

    result = await unless_disconnected(request.receive, answer())
    if isinstance(result, PreparedStream):
        prepared = result
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
    return await unless_disconnected(request.receive, check_values(
        body, caller_of(request), request.headers.get("x-vilmo-policy"),
        request.app.state.services))


@router.get("/v1/models")
async def models(request: Request) -> ModelList:
    services: Services = request.app.state.services
    return ModelList(data=[ModelCard(id=name) for name in services.upstream.model_names()])


@router.get("/healthz", response_model_exclude_none=True)
async def healthz(request: Request) -> Health:
    """Public by default: the policy and model names only to a caller that may see them."""
    services: Services = request.app.state.services
    caller: Caller | None = request.scope.get("state", {}).get("caller")
    if caller is None or not caller.sees_config:
        return Health()
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
    return parse_body(await request.body())


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = dotted(first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}" if where else first["msg"],
                             param=where or None, code="invalid_request") from None
