"""``create_app(config)``: the gateway as an ASGI app. Nothing happens at import time; the
lifespan builds the services (policies, instruction generator, upstream) into ``app.state``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from proxy.admin import AdminNoStore, admin_router
from proxy.caches import CacheWriter, attach_caches
from proxy.client_keys import VerifiedKeys
from proxy.edge_protocols import EDGE_COUNTER
from proxy.errors import GatewayError, Redactor, install_log_redaction
from proxy.middleware import BodyLimit, KeyAuth, UnexpectedErrors, key_refusal_sample
from proxy.openapi import install_openapi
from proxy.protocol import error_envelope
from proxy.record import Ledger
from proxy.routes import first_invalid, router
from proxy.services import Services, build_services
from proxy.settings import GatewayConfig, config_from_environment
from proxy.store import Store, open_store
from proxy.trusted_host import TrustedHost, allowed_hosts, keyless_paths

log = logging.getLogger(__name__)

ServicesFactory = Callable[[GatewayConfig], Services]


def create_app(config: GatewayConfig, build: ServicesFactory = build_services,
               freeze_heap: bool = False) -> FastAPI:
    """``freeze_heap``: a serving worker's app (``app_from_environment``) freezes what its
    start-up built (``freeze_start_up_heap``)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        services = app.state.services = build(config)
        store = app.state.store = await asyncio.to_thread(open_store, config.store)
        writer = CacheWriter()
        attach_store(services, store, writer)
        if freeze_heap:
            freeze_start_up_heap()
        try:  # the server's edge counts its refusals in this app's metrics (proxy.server)
            yield {EDGE_COUNTER: services.metrics.edge_refused}
        finally:
            await services.aclose()
            await asyncio.to_thread(writer.close)  # the cache values still queued
            await asyncio.to_thread(store.close)  # writes out (or spools) queued audit records

    app = FastAPI(title="vilmo gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(router)
    app.include_router(admin_router)
    install_openapi(app, config)
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    verified = app.state.verified_keys = VerifiedKeys()  # revoking forgets a key here too
    app.add_middleware(KeyAuth, settings=config.auth,  # outside: no body is read before a key
                       verified=verified)
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(TrustedHost, allowed=allowed_hosts(config),  # before any key is read
                       loopback_paths=keyless_paths(config))
    app.add_middleware(AdminNoStore)  # outermost: every admin answer, refusals too
    return app


def attach_store(services: Services, store: Store, writer: CacheWriter | None = None) -> None:
    """The audit trail, the store's health metrics and the store's caches (instructions and
    prompt embeddings, with their counters; written through ``writer`` when given) go live."""
    services.store = store
    services.metrics.store_health = store.health
    services.guard.remote_caches = bool(store.settings.url)
    caches = attach_caches(services.instructions, store, writer)
    services.metrics.cache_counts = lambda: {name: c.counts() for name, c in caches.items()}


def app_from_environment() -> FastAPI:
    """The app factory each uvicorn worker calls (``vilmo serve``, any ``--workers``): the
    config from ``VILMO_CONFIG`` or the embedded defaults, and log redaction for its secrets."""
    config = config_from_environment()
    install_log_redaction(Redactor(config.secrets()))
    return create_app(config, freeze_heap=True)


def freeze_start_up_heap() -> None:
    """Put what start-up built (models, policies, imported modules) out of the garbage
    collector's reach, its own garbage collected first: a full collection then walks only what
    requests made since, not the whole heap (the first one after start took 57 to 65 ms of a
    request at c=1, about once in the first 200 to 800 requests; issue 16). Once per process:
    objects frozen here are never collected, so a process that builds apps again and again
    (the tests) does not freeze."""
    gc.collect()
    gc.freeze()


def _respond(request: Request, error: GatewayError) -> JSONResponse:
    """The error in the OpenAI envelope; a chat request's is recorded, and named by its
    ``x-request-id`` (the audit record's id; none when a sampler left it out of the trail:
    ``proxy.refusals``) and ``x-vilmo-policy`` once one was chosen."""
    ledger: Ledger | None = getattr(request.state, "ledger", None)
    headers = dict(error.headers)
    if ledger is not None:
        if error.status != 429:  # a limit's 429 is sampled where it is refused
            ledger.sample(key_refusal_sample(request.scope, error, ledger.facts))
        request.app.state.services.finish(ledger, str(error.status), error.code)
        if ledger.audited:
            headers["x-request-id"] = ledger.request_id
        if ledger.facts.policy:
            headers["x-vilmo-policy"] = ledger.facts.policy
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
    return _respond(request, exc)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _respond(request, first_invalid(exc.errors(), skip=1))  # as the routes' own 400s


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    return JSONResponse(error_envelope(str(exc.detail), "invalid_request_error", None, code),
                        status_code=exc.status_code)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
"""Codes of Starlette's own errors (no such route, or not with this method)."""

