"""The admin API (``/admin/...``) and the dashboard page (``/dashboard``).

Enabled by ``auth.admin_key``; every ``/admin/...`` route answers 401 without that key and 403
with a client key (a config key or a virtual one), so a tenant can never issue itself keys or
read others' prompts. Errors use the OpenAI envelope. A body is read only once the admin key is
checked, as the chat route reads its own (``proxy.routes.read_json``: 413, 499, 400 naming the
field). The store is synchronous: each call runs in a worker thread.

    POST   /admin/keys            {"name", "policy"?, "profile"?, "rpm"?, "tpm"?} -> 201, key shown once
    GET    /admin/keys            {"data": [...]} without key values
    GET    /admin/keys/{id}       one key
    PATCH  /admin/keys/{id}       {"policy"?, "profile"?, "rpm"?, "tpm"?}: bind, set limits (null clears)
    DELETE /admin/keys/{id}       204; refused (401) from then on, on every replica while the
                                  store is reachable; during a store outage another replica may
                                  serve it for up to ``VERIFIED_TTL_S`` (300 s) after its last
                                  check there (``proxy.client_keys``); this one never does
    GET    /admin/audit           filters + cursor paging, newest first
    GET    /admin/audit/export    the same filters, every match, as JSON Lines
    GET    /admin/summary         the dashboard's figures (``proxy.summary``)
    GET    /dashboard             the page (no data in it; it asks for the admin key)
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import time
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.client_keys import VerifiedKeys
from proxy.errors import (
    AdminForbidden,
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    StoreDown,
)
from proxy.middleware import _bearer, is_admin_path, resolve_caller
from proxy.openapi import error_responses, inline_json_body
from proxy.policy_reload import loaded_policies, policy_names
from proxy.routes import read_json, validate
from proxy.services import Services
from proxy.store import AuditQuery, InvalidCursor, Store, StoreError, StoreUnavailable
from proxy.store.records import MAX_PAGE
from proxy.summary import EARLIEST, LATEST, MAX_BUCKETS, parse_instant, summarize

MAX_FILTER_CHARS = 256


async def require_admin_enabled(request: Request) -> None:
    """404 when the admin API is off (no ``auth.admin_key``): then ``/dashboard`` is gone too."""
    services: Services = request.app.state.services
    if services.config.auth.admin_key is None:
        raise NotFound("the admin API is off: set auth.admin_key", code="admin_disabled")


async def require_admin(request: Request) -> None:
    """401 without the admin key, 403 with a client key, 404 when the admin API is off."""
    await require_admin_enabled(request)
    services: Services = request.app.state.services
    admin_key = services.config.auth.admin_key or ""  # set: require_admin_enabled
    presented = _bearer(request.scope) or ""
    if presented and hmac.compare_digest(presented.encode(), admin_key.encode()):
        return
    store: Store | None = getattr(request.app.state, "store", None)
    if presented and await resolve_caller(presented, services.config.auth.keys, store):
        raise AdminForbidden("this is a client key; the admin API needs the admin key",
                             code="admin_key_required")
    raise AuthenticationFailed("missing or invalid admin key: send 'Authorization: Bearer "
                               "<admin key>'", code="invalid_admin_key")


class AdminNoStore:
    """``Cache-Control: no-store`` on every answer under the admin paths (``/admin...``,
    ``/dashboard``), errors included: they carry prompts, replies and key metadata, which no
    browser or shared cache may keep. Pure ASGI and outermost, so an answer from any layer
    (a route, an exception handler, a middleware's refusal, Starlette's 404) gets it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_admin_path(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def no_store_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, no_store_send)


admin_router = APIRouter()
admin = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)],
                  responses=error_responses(400, 401, 403, 404, 503))


NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]+$"


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # `true` or "7" is no rpm
    name: str = Field(min_length=1, max_length=128, pattern=NO_CONTROL_CHARACTERS)
    """Shown in metrics labels, audit records and the dashboard: no line breaks or NULs."""
    policy: str | None = Field(None, max_length=MAX_FILTER_CHARS)
    profile: str | None = Field(None, max_length=MAX_FILTER_CHARS)
    rpm: int | None = Field(None, ge=1, le=10**9)
    tpm: int | None = Field(None, ge=1, le=10**9)


class KeyChange(BaseModel):
    """Only the fields sent change; null clears one."""

    model_config = ConfigDict(extra="forbid", strict=True)
    policy: str | None = Field(None, max_length=MAX_FILTER_CHARS)
    profile: str | None = Field(None, max_length=MAX_FILTER_CHARS)
    rpm: int | None = Field(None, ge=1, le=10**9)
    tpm: int | None = Field(None, ge=1, le=10**9)


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """A store call off the event loop, its failures as 503 / 400 envelopes."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except InvalidCursor as error:
        raise InvalidRequest(f"invalid cursor: {error}", param="after",
                             code="invalid_cursor") from None
    except StoreUnavailable as error:
        raise StoreDown(f"the store is unreachable: {error}", code="store_unavailable") from None
    except StoreError as error:
        raise StoreDown(f"store error: {error}", code="store_error") from None
    except ValueError as error:
        raise InvalidRequest(str(error), code="invalid_request") from None


def check_policies(services: Services, policy: str | None, profile: str | None) -> None:
    """400 ``policy_not_found`` naming the field (``policy`` or ``profile``) that names no
    loaded policy."""
    known = policy_names(services.policies)
    for field_name, name in (("policy", policy), ("profile", profile)):
        if name is not None and name not in known:
            raise InvalidRequest(f"unknown {field_name} {name!r}; known: {', '.join(known)}",
                                 param=field_name, code="policy_not_found")


RESERVED_NAMES = frozenset({"anonymous", "unauthenticated", "unidentified"})
"""The names the gateway records for callers without a key (``proxy.middleware``)."""


def check_name(services: Services, name: str) -> None:
    """400 ``key_name_reserved`` for a name an audit record or a metric label already gives
    to someone else: a caller without a key (``RESERVED_NAMES``) or a config key. Compared
    without case and surrounding spaces, so ``Anonymous`` cannot pass for one either."""
    folded = name.strip().casefold()
    taken = RESERVED_NAMES | {k.name.strip().casefold() for k in services.config.auth.keys}
    if folded in taken:
        raise InvalidRequest(f"the name {name[:64]!r} is reserved (callers without a key, "
                             "config keys); choose another", param="name",
                             code="key_name_reserved")


@admin.post("/keys", status_code=201, openapi_extra=inline_json_body(NewKey),
            responses=error_responses(415))
async def create_key(request: Request) -> JSONResponse:
    body = validate(NewKey, await read_json(request))
    services: Services = request.app.state.services
    check_name(services, body.name)
    check_policies(services, body.policy, body.profile)
    issued = await in_thread(store_of(request).create_key, body.name, policy=body.policy,
                             profile=body.profile, rpm=body.rpm, tpm=body.tpm)
    return JSONResponse(issued.public(), status_code=201, headers={"cache-control": "no-store"})


@admin.get("/keys")
async def list_keys(request: Request) -> dict[str, object]:
    keys = await in_thread(store_of(request).list_keys)
    return {"data": [key.public() for key in keys]}


@admin.get("/keys/{key_id}")
async def get_key(request: Request, key_id: str) -> dict[str, object]:
    key = await in_thread(store_of(request).get_key, key_id[:MAX_FILTER_CHARS])
    if key is None:
        raise NotFound(f"no key {key_id[:64]!r}", code="key_not_found")
    return dict(key.public())


@admin.patch("/keys/{key_id}", openapi_extra=inline_json_body(KeyChange),
             responses=error_responses(415))
async def change_key(request: Request, key_id: str) -> dict[str, object]:
    body = validate(KeyChange, await read_json(request))
    store = store_of(request)
    check_policies(request.app.state.services, body.policy, body.profile)
    key = await in_thread(store.get_key, key_id[:MAX_FILTER_CHARS])
    if key is None or not key.active:
        raise NotFound(f"no active key {key_id[:64]!r}", code="key_not_found")
    sent = body.model_fields_set
    if sent & {"policy", "profile"}:
        key = await in_thread(store.bind_key, key.id,
                              policy=body.policy if "policy" in sent else key.policy,
                              profile=body.profile if "profile" in sent else key.profile)
    if key is not None and sent & {"rpm", "tpm"}:
        key = await in_thread(store.set_limits, key.id,
                              rpm=body.rpm if "rpm" in sent else key.rpm,
                              tpm=body.tpm if "tpm" in sent else key.tpm)
    if key is None:
        raise NotFound(f"no key {key_id[:64]!r}", code="key_not_found")
    return dict(key.public())


@admin.delete("/keys/{key_id}", status_code=204)
async def revoke_key(request: Request, key_id: str) -> Response:
    if not await in_thread(store_of(request).revoke_key, key_id[:MAX_FILTER_CHARS]):
        raise NotFound(f"no key {key_id[:64]!r}", code="key_not_found")
    verified: VerifiedKeys | None = getattr(request.app.state, "verified_keys", None)
    if verified is not None:  # not served from this replica's outage grace either
        verified.forget(key_id)
    return Response(status_code=204)


Filter = Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)]


def parse_time(value: str | None, name: str) -> float | None:
    """Unix seconds or ISO 8601 (``2026-11-30T09:00:00Z``)."""
    if value is None or value == "":
        return None
    try:
        return parse_instant(value)
    except ValueError:
        raise InvalidRequest(f"{name}: Unix seconds or ISO 8601 expected", param=name,
                             code="invalid_request") from None


def audit_query(request: Request, key: Filter = None, key_id: Filter = None,
                policy: Filter = None, action: Filter = None, value: Filter = None,
                model: Filter = None, since: Filter = None, until: Filter = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                after: Filter = None) -> AuditQuery:
    """The filters of the audit routes; each names one value, so a repeated one is refused
    rather than silently narrowed to its last occurrence."""
    for name in AUDIT_FILTERS:
        if len(request.query_params.getlist(name)) > 1:
            raise InvalidRequest(f"{name}: give it at most once", param=name,
                                 code="invalid_request")
    return AuditQuery(since=parse_time(since, "since"), until=parse_time(until, "until"),
                      key=key or None, key_id=key_id or None, policy=policy or None,
                      value=value or None,
                      action=action or None, model=model or None, limit=limit,
                      after=after or None)


# The query parameters of the audit routes, read off `audit_query` so the two never drift.
AUDIT_FILTERS = tuple(name for name in inspect.signature(audit_query).parameters
                      if name != "request")


@admin.get("/audit")
async def audit(request: Request,
                query: Annotated[AuditQuery, Depends(audit_query)]) -> dict[str, object]:
    page = await in_thread(store_of(request).query_audit, query)
    return dict(page.to_json())


class JSONLinesResponse(StreamingResponse):
    media_type = "application/x-ndjson"


@admin.get("/audit/export", response_class=JSONLinesResponse)
async def audit_export(request: Request,
                       query: Annotated[AuditQuery, Depends(audit_query)]) -> Response:
    """Every matching record, newest first, one JSON object per line (streamed)."""
    store = store_of(request)
    await in_thread(store.query_audit, query)  # fail with an envelope before streaming starts

    def lines() -> Any:
        for record in store.export_audit(query):
            yield record.dumps() + "\n"

    return JSONLinesResponse(lines(), headers={
        "content-disposition": 'attachment; filename="vilmo-audit.jsonl"'})


@admin.get("/summary")
async def summary(request: Request, since: Filter = None, until: Filter = None,
                  bucket: Annotated[float | None, Query(gt=0, le=86400 * 31)] = None,
                  ) -> dict[str, object]:
    """The dashboard's figures over ``since``..``until`` (default: the last 24 hours), in
    ``bucket``-second steps (default: about 48 steps)."""
    services: Services = request.app.state.services
    end, start = parse_time(until, "until"), parse_time(since, "since")  # 0 is a time too
    end = time.time() if end is None else end
    start = end - 86400 if start is None else start
    for name, instant in (("until", end), ("since", start)):
        if not EARLIEST <= instant <= LATEST:
            raise InvalidRequest(f"{name}: out of range (the years 1 to 9999)", param=name,
                                 code="invalid_request")
    if start >= end:
        raise InvalidRequest("since must be before until", param="since",
                             code="invalid_request")
    step = bucket or max(1.0, (end - start) / 48)
    if (end - start) / step > MAX_BUCKETS:
        step = (end - start) / MAX_BUCKETS
    # One read of every policy: names() then get(name) could meet one removed in between.
    weights = {name: {value: rule.weight for value, rule in policy.values.items()}
               for name, policy in loaded_policies(services.policies).items()}
    store = store_of(request)
    query = AuditQuery(since=start, until=end)

    def compute() -> dict[str, object]:
        return summarize(store.export_audit(query), weights, start, end, step)

    result: dict[str, object] = await in_thread(compute)
    return result


admin_router.include_router(admin)


@admin_router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False,
                  dependencies=[Depends(require_admin_enabled)])
async def dashboard() -> HTMLResponse:
    """The page (no data in it; it asks for the admin key); 404 when the admin API is off."""
    page = resources.files("proxy").joinpath("dashboard.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={
        "cache-control": "no-store", "x-frame-options": "DENY",
        "content-security-policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                   "style-src 'unsafe-inline'; img-src 'self' data:; "
                                   "connect-src 'self'; frame-ancestors 'none'"})
