"""HTTP routes. Each one parses, calls the pipeline, and maps the result to a response."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from proxy import pipeline
from proxy.audit import RequestRecord
from proxy.errors import InvalidRequest
from proxy.middleware import Caller
from proxy.pipeline import ChatReply, ChatStream, Services
from proxy.protocol import ChatCompletionRequest, Health, ModelCard, ModelList
from proxy.streaming import sse_events
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
    headers = vilmo_headers(result, record)
    if isinstance(result, ChatStream):
        return StreamingResponse(sse_events(result, services, record), headers=headers,
                                 media_type="text/event-stream")
    return JSONResponse(result.completion, headers=headers)


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


def vilmo_headers(result: ChatReply | ChatStream, record: RequestRecord) -> dict[str, str]:
    return {"x-vilmo-policy": result.policy.name,
            "x-vilmo-principles": ",".join(result.instruction.principle_ids),
            "x-request-id": record.request_id}


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}",
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    return data


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = dotted(first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}" if where else first["msg"],
                             param=where or None, code="invalid_request") from None
