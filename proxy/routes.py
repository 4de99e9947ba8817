"""HTTP routes. Each one parses, calls the pipeline, and maps the result to a response."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from proxy import pipeline
from proxy.actions import with_annotation
from proxy.admission import admit, parse_body
from proxy.check import check_values
from proxy.check_charge import charge_check, refund_check, refused_unread
from proxy.client_keys import reserve_tokens
from proxy.cross_site import refuse_unless_json
from proxy.disconnect import unless_disconnected
from proxy.errors import ClientClosed, InvalidRequest, ModelNotFound
from proxy.middleware import Caller
from proxy.off_loop import off_loop_past
from proxy.openapi import error_responses, header, json_body
from proxy.outcome import Facts, Stream, verdict_of
from proxy.pipeline import ChatRequest, choose_policy, require_model
from proxy.policy_reload import policy_names
from proxy.protocol import (
    MAX_NAME_CHARS,
    ChatCompletionRequest,
    Health,
    ModelCard,
    ModelList,
    UpstreamParams,
    ValuesCheckRequest,
    ValuesCheckResult,
    shown_name,
)
from proxy.record import Ledger
from proxy.services import Services
from proxy.sse import sse_body
from proxy.trusted_host import host_trusted
from proxy.upstream_log import current_request
from vilmo.instruct.instructions import Instruction
from vilmo.yamlfile import dotted

router = APIRouter(responses=error_responses(401))
POLICY_HEADER = header("X-Vilmo-Policy", "Choose the policy (keys with allow_policy_header: "
                       "their bound one, or one their `policies` lists)")
ANNOTATE_HEADER = header("X-Vilmo-Annotate", "`body`: the verdict in a `vilmo` field too")
ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


@router.post("/v1/chat/completions", responses={
    200: {"description": "A chat completion, or with `stream: true` its server-sent events",
          "content": {"application/json": {}, "text/event-stream": {}}},
    **error_responses(400, 403, 404, 413, 415, 429, 502, 503, 504)},
    openapi_extra={**json_body(ChatCompletionRequest, "An OpenAI chat completion request"),
                   "parameters": [POLICY_HEADER, ANNOTATE_HEADER]})
async def chat_completions(request: Request) -> Response:
    services: Services = request.app.state.services
    caller = caller_of(request)
    ledger = Ledger(caller.name, key_id=caller.key.id if caller.key else None)
    request.state.ledger = ledger  # from here on every outcome is recorded, 400s too
    current_request.set(ledger.request_id)  # upstream failures' log lines name it
    raw, body = await read_valid(request, ChatCompletionRequest)
    params = admit(raw, body, services.config)
    await hold_tokens(request, caller, params)
    chat = ChatRequest(params, bool(body.stream), caller, request.headers.get("x-vilmo-policy"),
                       ledger)
    annotate = request.headers.get("x-vilmo-annotate", "").lower() == "body"
    outcome = await unless_disconnected(request.receive, pipeline.chat(chat, services))
    headers = outcome_headers(outcome.call.policy.name, outcome.call.instruction,
                              outcome.facts, outcome.guard, ledger.request_id)
    if isinstance(outcome, Stream):
        return StreamingResponse(sse_body(outcome, ledger.request_id, annotate, services.late),
                                 headers={**headers, "x-vilmo-stream-mode": outcome.mode},
                                 media_type="text/event-stream")
    completion = outcome.completion
    if annotate:
        completion = with_annotation(completion, verdict_of(outcome.facts.shown),
                                     len(outcome.facts.attempts))
    response = JSONResponse(completion, headers=headers)  # failing, recorded as a 500
    services.finish(ledger, "200")
    return response


@router.post("/v1/values/check", responses=error_responses(400, 403, 413, 415, 429, 503),
             openapi_extra={**json_body(ValuesCheckRequest, "A text or a conversation to judge"),
                            "parameters": [POLICY_HEADER]})
async def values_check(request: Request) -> ValuesCheckResult:
    """Judges a text or a conversation under a policy, without calling a model. A virtual
    key's check is charged to its `tpm` once its policy is chosen; one refused before the judge
    reads it (400, 413) costs no tokens; one whose policy is unknown or forbidden is refused
    before it is charged."""
    raw, body = await read_valid(request, ValuesCheckRequest)
    caller, store = caller_of(request), getattr(request.app.state, "store", None)
    services: Services = request.app.state.services
    policy = await choose_policy(caller, body.policy or request.headers.get("x-vilmo-policy"),
                                 services.policies,
                                 "policy" if body.policy else "X-Vilmo-Policy")
    if caller.key is None or store is None:
        return await unless_disconnected(request.receive, check_values(body, policy, services))
    hold = await charge_check(store, caller.key, raw)
    if hold.refused is not None:
        services.limit_refused(caller.key, hold.refused, "tpm", audited=False)
        raise hold.refused
    try:
        return await unless_disconnected(request.receive, check_values(body, policy, services))
    except Exception as error:
        if refused_unread(error):
            await refund_check(store, caller.key, hold)
        raise


@router.get("/v1/models")
@router.get("/v1/models/", include_in_schema=False)  # no id: the list, not a model not found
async def models(request: Request) -> ModelList:
    """The model names the config serves; a pattern (``*``, ``gpt-*``) is no model's id, so it
    is not listed (``GET /v1/models/{model}`` answers for a name it serves)."""
    services: Services = request.app.state.services
    return ModelList(data=[ModelCard(id=name) for name in services.upstream.model_names()
                           if "*" not in name])


@router.get("/v1/models/{model:path}", responses=error_responses(404))
async def retrieve_model(model: str, request: Request) -> ModelCard:
    """A model the config serves, by an entry's name or through a pattern; else a 404
    ``model_not_found``, as the chat route answers; so is a name chat refuses (over
    ``MAX_NAME_CHARS``) or one with a pattern's characters (``*?[``: a pattern is no model)
    unless an entry has that very name (``llama-8b[fp8]``, which the list shows)."""
    services: Services = request.app.state.services
    listed = "*" not in model and model in services.upstream.model_names()  # as the list
    if len(model) > MAX_NAME_CHARS or (PATTERN_CHARS.search(model) and not listed):
        raise ModelNotFound(f"the model {shown_name(model)!r} does not exist on this gateway "
                            f"(a name is at most {MAX_NAME_CHARS} characters, without *, ? or [)",
                            param="model", code="model_not_found")
    require_model(services.upstream, model, caller_of(request))
    return ModelCard(id=model)


PATTERN_CHARS = re.compile(r"[*?\[]")
"""Characters of a config pattern (``stub-*``), never of a model's id."""


@router.get("/healthz", response_model_exclude_none=True)
async def healthz(request: Request) -> Health:
    """Public by default: the policy and model names only to a caller that may see them,
    under an allowed Host (``proxy.trusted_host``)."""
    services: Services = request.app.state.services
    caller: Caller | None = request.scope.get("state", {}).get("caller")
    if caller is None or not caller.sees_config or not host_trusted(request.scope):
        return Health()
    policies = services.policies  # a key sees the policies it may choose, no others
    return Health(policies=caller.choosable(policy_names(policies), policies.default_name),
                  models=services.upstream.model_names())


@router.get("/metrics", response_class=PlainTextResponse, responses=error_responses(403))
async def metrics(request: Request) -> Response:
    """Prometheus metrics; they name every tenant's key and its usage, so (once keys are set)
    only the metrics key or the admin key reads them: a client key gets a 403."""
    services: Services = request.app.state.services
    return Response(services.metrics.exposition(),
                    media_type="text/plain; version=0.0.4; charset=utf-8")


async def hold_tokens(request: Request, caller: Caller, params: UpstreamParams) -> None:
    """Reserve the request's tokens against its virtual key's ``tpm`` before any work, and
    cap its replies to what is held (``proxy.client_keys.reserve_tokens``): the 429 when they
    do not fit."""
    store = getattr(request.app.state, "store", None)
    if caller.key is None or store is None:
        return
    services: Services = request.app.state.services
    server = services.config.server
    refused = await reserve_tokens(store, caller.key, params,
                                   min(server.max_tokens, server.tpm_default_max_tokens))
    if refused is not None:  # audited as the middleware's limit refusals are (sampled)
        request.state.ledger.sample(services.limit_refused(caller.key, refused, "tpm"))
        raise refused


def caller_of(request: Request) -> Caller:
    caller: Caller = request.scope["state"]["caller"]
    return caller


def outcome_headers(policy: str, instruction: Instruction, facts: Facts, guard: str,
                    request_id: str) -> dict[str, str]:
    headers = {"x-vilmo-policy": policy,
               "x-vilmo-principles": ",".join(instruction.principle_ids),
               "x-vilmo-stakes": ",".join(instruction.stakes),
               "x-vilmo-guard": guard, "x-request-id": request_id}
    verdict, input_verdict = verdict_of(facts.shown), verdict_of(facts.input)
    if verdict is not None:
        headers["x-vilmo-violations"] = ",".join(verdict.violation_ids)
        headers["x-vilmo-action"] = verdict.action.value
    if input_verdict is not None:
        headers["x-vilmo-input-violations"] = ",".join(input_verdict.violation_ids)
    if facts.attempts:
        headers["x-vilmo-regenerations"] = str(len(facts.attempts))
    return headers


OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed and validated in a worker thread: a 4 MiB body of tiny
objects costs a second of CPU, which would hold every other request of this worker (and
``/healthz``) on the event loop."""


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON body; a client that leaves before sending all of it is a 499."""
    body = await read_bytes(request)
    return await off_loop_if_large(body, parse_body, body)


async def read_valid(request: Request, model: type[ModelT]) -> tuple[dict[str, Any], ModelT]:
    """The request's JSON body and ``model`` validated from it."""
    body = await read_bytes(request)
    return await off_loop_if_large(body, parse_valid, body, model)


async def off_loop_if_large(body: bytes, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``, in a worker thread when ``body`` is larger than ``OFF_LOOP_BYTES``."""
    return await off_loop_past(len(body), OFF_LOOP_BYTES, work, *args)


async def read_bytes(request: Request) -> bytes:
    """The request's body, typed JSON and not sent by a page on another site
    (``proxy.cross_site``: 415, 403); a client that leaves before sending all of it is a 499."""
    refuse_unless_json(request.headers)
    try:
        return await request.body()
    except ClientDisconnect:
        raise ClientClosed("the client closed the connection before sending its request",
                           code="client_closed") from None


def parse_valid(body: bytes, model: type[ModelT]) -> tuple[dict[str, Any], ModelT]:
    raw = parse_body(body)
    return raw, validate(model, raw)


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise first_invalid(exc.errors()) from None


def first_invalid(errors: Sequence[Mapping[str, Any]], skip: int = 0) -> InvalidRequest:
    """The 400 for a failed validation: its first error, ``param`` naming the field (its
    location past ``skip`` leading parts: FastAPI's ``query``, ``path``; without pydantic's
    union tags, ``field_path``; cut by ``shown_name``, as its keys are the client's), never the
    input; the message without the gateway's class names (``instance of ChatMessageIn``)."""
    if not errors:
        return InvalidRequest("the request is invalid", code="invalid_request")
    where = shown_name(dotted(field_path(tuple(errors[0]["loc"])[skip:])))
    message = INTERNAL_NAME.sub("", str(errors[0]["msg"]))
    return InvalidRequest(f"{where}: {message}" if where else message, param=where or None,
                          code="invalid_request")


UNION_TAG = re.compile(r"[A-Z][A-Za-z0-9]*|[a-z-]+\[.*\]|str|int|float|bool|dict|list|none")
"""A location part that is pydantic's tag for a union's member, not a field: a class name
(``ChatMessageIn``), a parametrized type (``list[ContentPart]``, ``literal['none','auto']``,
``function-after[...]``), a bare type (``str``). A key a client chose that looks so (a
``metadata`` key ``str``) is left out too: the field above it is still named."""

INTERNAL_NAME = re.compile(r" or instance of [A-Za-z_][A-Za-z0-9_]*")
"""Pydantic's ``or instance of ChatMessageIn`` after "a valid dictionary": a class name."""


def field_path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """``loc`` without union tags (``messages.0.content.str`` is ``messages.0.content``); the
    first part is always a field."""
    return loc[:1] + tuple(part for part in loc[1:]
                           if not (isinstance(part, str) and UNION_TAG.fullmatch(part)))
