"""The gateway's OpenAPI document as the wire behaves, not as FastAPI would guess it.

The chat and check routes read their JSON themselves (``proxy.admission``: depth, finite
numbers, valid Unicode before the schema), so FastAPI sees no body parameter; ``json_body``
documents the body they validate instead, from the same pydantic model. Validation errors are
answered as 400 envelopes (``proxy.app``), never FastAPI's 422 ``HTTPValidationError``: the
document says so, and every documented error has the ``ErrorResponse`` schema. Clients and
schemathesis (tests/proxy/test_openapi_fuzz.py) read the result.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from proxy.protocol import ChatCompletionRequest, ErrorResponse, ValuesCheckRequest
from proxy.settings import GatewayConfig
from proxy.trusted_host import ANY_HOST, EXEMPT_PATHS, allowed_hosts

REF = "#/components/schemas/{model}"
BODY_MODELS: tuple[type[BaseModel], ...] = (ChatCompletionRequest, ValuesCheckRequest)
"""Models of bodies the routes parse themselves (their schemas join the components)."""

ERROR_STATUSES = {
    400: "Invalid JSON or a body that fails the schema (`param` names the field)",
    401: "Missing or unknown API key",
    403: "The key may not do this (X-Vilmo-Policy, a client key on /admin or /metrics), or a "
         "page on another site sent the request (Sec-Fetch-Site: cross-site)",
    404: "Unknown model, route or admin resource",
    413: "Request body (or text to check) too large",
    421: "The Host header names no host in server.allowed_hosts (DNS rebinding)",
    415: "A JSON body sent without 'Content-Type: application/json'",
    429: "Rate limited: the upstream's, the Router's or the key's (with Retry-After)",
    502: "The upstream failed or could not be reached",
    503: "The value check failed closed, the store is down, or the upstream is cooling down",
    504: "The upstream timed out",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Documented error statuses, each an OpenAI error envelope."""
    return {status: {"model": ErrorResponse, "description": ERROR_STATUSES[status]}
            for status in statuses}


def json_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` from its body itself."""
    return {"requestBody": {"required": True, "description": description, "content": {
        "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}}


def inline_json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` from its body itself, the schema
    inline (the admin routes: their bodies are read only once the admin key is checked)."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


def header(name: str, description: str) -> dict[str, Any]:
    """An optional request header a route reads itself."""
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


def install_openapi(app: FastAPI, config: GatewayConfig) -> None:
    """Build ``app``'s document once, on first request: the body models, the 400s, the
    server's limits and which paths need a key, from ``config``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = configured(wire_document(document), config)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def wire_document(document: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    _, defs = models_json_schema([(m, "validation") for m in BODY_MODELS], ref_template=REF)
    schemas.update(defs.get("$defs", {}))
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    error_ref = {"$ref": REF.format(model=ErrorResponse.__name__)}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if responses.pop("422", None) is not None or "requestBody" in operation:
                responses.setdefault("400", {"description": ERROR_STATUSES[400]})
            for status, response in responses.items():
                if int(status) >= 400:  # JSON whatever the route's own media type
                    response["content"] = {"application/json": {"schema": error_ref}}
    return document


def configured(document: dict[str, Any], config: GatewayConfig) -> dict[str, Any]:
    """What this gateway's config decides: who needs a key, which routes may get a 421 (a
    ``Host`` not allowed: ``proxy.trusted_host``), and the largest n and max_tokens."""
    chat = document["components"]["schemas"][ChatCompletionRequest.__name__]["properties"]
    for name, limit in (("n", config.server.max_n), ("max_tokens", config.server.max_tokens),
                        ("max_completion_tokens", config.server.max_tokens)):
        for option in chat[name].get("anyOf", [chat[name]]):
            if option.get("type") == "integer":
                option["maximum"] = limit
    document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    document["security"] = [{"bearer": []}]
    auth = config.auth
    keys_required = auth.keys_required
    hosts_checked = ANY_HOST not in allowed_hosts(config)
    for path, operations in document["paths"].items():
        if hosts_checked and path not in EXEMPT_PATHS:
            for operation in operations.values():
                operation["responses"]["421"] = {"description": ERROR_STATUSES[421], "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=ErrorResponse.__name__)}}}}
        if path.startswith("/admin"):
            continue
        guarded = keys_required or (path == "/metrics" and auth.metrics_key is not None)
        if not guarded or path in auth.public_paths:
            for operation in operations.values():
                operation["security"] = [{}, {"bearer": []}]  # a key is optional here
                operation["responses"].pop("401", None)
    return document
