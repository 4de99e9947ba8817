"""The direct path to OpenAI-compatible upstreams: their ``/v1/chat/completions`` over one
pooled ``httpx.AsyncClient``, with no LiteLLM in between (LiteLLM's Router costs several ms of
CPU per call and about 0.45 ms per streamed chunk, issue 16). Stream events are relayed as
the upstream sent them (``proxy.relay``).

``direct_routes`` picks the models it serves from the config (``upstream.direct``);
``SplitUpstream`` sends every other model, and those with fallbacks or retries, to LiteLLM.
What is sent: the admitted request (only ``protocol.FORWARDED_FIELDS`` and the model's
``allowed_params``), with the config's key and headers, never the client's, and no cookies (an
upstream's are not kept).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx

from proxy.errors import (
    ModelNotFound,
    Redactor,
    UpstreamFailed,
    UpstreamTimeout,
    map_http_errors,
    upstream_status_error,
)
from proxy.fields import know_models
from proxy.protocol import UpstreamParams
from proxy.relay import SSEReader
from proxy.replies import ChatCompletion, ChatCompletionChunk
from proxy.settings import ConfigError, Deployment, GatewayConfig, configured_name
from proxy.upstream import Upstream, entered, no_cookies, upstream_json
from proxy.upstream_log import upstream_said
from proxy.upstream_pool import ShardedClient
from vilmo.yamlfile import FileIssue

OPENAI_BASE = "https://api.openai.com/v1"
DIRECT_PARAMS = frozenset({"model", "api_base", "api_key", "timeout", "stream_timeout",
                           "extra_headers", "max_retries"})
"""``litellm_params`` the direct path understands; an entry with others goes to LiteLLM."""
KEEPALIVE_S = 4.0
"""Idle pooled connections are dropped sooner than uvicorn's 5 s keep-alive ends them, so a
request rarely meets a connection its upstream is closing (``send`` retries one that does)."""
FALLBACK_SETTINGS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
NO_RESPONSE = "Server disconnected without sending a response"
"""httpcore's message when a connection ends cleanly before any byte of the response."""
ERROR_BODY_BYTES = 65_536
"""The largest error reply whose JSON is read for its message, ``param`` and ``code``
(``error_fields``): OpenAI's are under a kilobyte."""


class Opening:
    """An httpcore ``trace`` hook that notes whether the request opened a new connection
    (else it went out on a pooled keep-alive one)."""

    __slots__ = ("opened",)

    def __init__(self) -> None:
        self.opened = False

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_"):  # connect_tcp, connect_unix_socket
            self.opened = True


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """One ``model_list`` entry served directly."""

    name: str
    """Its ``model_name`` (a pattern like ``stub-*`` matches several)."""
    model: str
    """The upstream's model name (``openai/`` removed); a ``*`` takes what the name's matched."""
    url: str
    headers: dict[str, str]
    timeout: httpx.Timeout
    stream_timeout: httpx.Timeout
    deadline_s: float
    """A plain request's whole time: httpx's timeouts bound each read, not the whole, so an
    upstream trickling its body would hold the request without this."""

    def upstream_model(self, requested: str) -> str:
        """As LiteLLM's pattern routes do: ``stub-*`` → ``openai/stub-*`` sends the request's
        ``stub-x`` as ``stub-x``."""
        if "*" not in self.model:
            return self.model
        prefix, _, suffix = self.name.partition("*")
        matched = requested[len(prefix):len(requested) - len(suffix)] if "*" in self.name \
            else requested
        return self.model.replace("*", matched, 1)


def why_not_direct(entry: Deployment, config: GatewayConfig) -> str | None:
    """Why ``entry`` cannot go the direct path, or None when it can."""
    params = entry.litellm_params
    if not str(params["model"]).startswith("openai/"):
        return "its provider is not openai/"
    if others := sorted(set(params) - DIRECT_PARAMS):
        return f"litellm_params {others} need LiteLLM"
    if sum(d.model_name == entry.model_name for d in config.model_list) > 1:
        return "it has several deployments (LiteLLM balances them)"
    if int(params.get("max_retries") or config.router_settings.get("num_retries") or 0) > 0:
        return "retries are configured (LiteLLM retries)"
    if config.router_settings.get("default_fallbacks") or entry.model_name in fallback_names(
            config.router_settings):
        return "it has fallbacks or is one (LiteLLM falls back)"
    return None


def fallback_names(router_settings: dict[str, Any]) -> set[str]:
    """Every model named in the Router's fallback lists, as the one falling back or a fallback
    (``[{"a": ["b"]}]``)."""
    names: set[str] = set()
    for setting in FALLBACK_SETTINGS:
        for item in router_settings.get(setting) or []:
            if isinstance(item, dict):
                for name, targets in item.items():
                    names.add(str(name))
                    names.update(str(t) for t in (targets if isinstance(targets, list)
                                                  else [targets]))
    return names


def direct_routes(config: GatewayConfig) -> list[DirectRoute]:
    """The entries served directly under ``upstream.direct``: auto, those that can be; always,
    all (one that cannot is a ConfigError); never, none. ``auto`` also needs an ``api_base``
    (set for every model by ``VILMO_UPSTREAM_BASE``): plain OpenAI stays with LiteLLM."""
    mode = config.upstream.direct
    if mode == "never":
        return []
    routes, issues = [], []
    for i, entry in enumerate(config.model_list):
        reason = why_not_direct(entry, config)
        if reason is None and mode == "auto" and not entry.litellm_params.get("api_base"):
            continue
        if reason is None:
            routes.append(route_of(entry, config))
        elif mode == "always":
            issues.append(FileIssue("config", None, f"model_list.{i}",
                                    f"upstream.direct is 'always' but {entry.model_name!r} "
                                    f"cannot go direct: {reason}"))
    if issues:
        raise ConfigError(issues)
    return routes


def route_of(entry: Deployment, config: GatewayConfig) -> DirectRoute:
    params, settings = entry.litellm_params, config.upstream
    base = str(params.get("api_base") or OPENAI_BASE).rstrip("/")
    headers = {"content-type": "application/json", "accept": "application/json"}
    if params.get("api_key"):
        headers["authorization"] = f"Bearer {params['api_key']}"
    headers.update({str(k).lower(): str(v) for k, v in (params.get("extra_headers") or {}).items()})
    seconds = float(params.get("timeout") or config.router_settings.get("timeout")
                    or settings.timeout_s)
    stream_seconds = float(params.get("stream_timeout") or seconds)
    return DirectRoute(
        name=entry.model_name, model=str(params["model"]).removeprefix("openai/"),
        url=f"{base}/chat/completions", headers=headers,
        timeout=httpx.Timeout(seconds, connect=settings.connect_timeout_s),
        stream_timeout=httpx.Timeout(stream_seconds, connect=settings.connect_timeout_s),
        deadline_s=seconds)


class DirectUpstream:
    """The ``Upstream`` seam for direct routes. One (sharded) client, so connections are
    reused."""

    def __init__(self, routes: Sequence[DirectRoute], config: GatewayConfig,
                 redact: Redactor) -> None:
        self.routes = {r.name: r for r in routes}
        self.max_bytes = config.upstream.max_response_bytes
        self.redact = redact
        self.client = ShardedClient(config.upstream.max_connections, KEEPALIVE_S,
                                    follow_redirects=False, trust_env=False,
                                    cookies=no_cookies())

    def serves(self, model: str) -> bool:
        return configured_name(model, list(self.routes)) is not None

    def model_names(self) -> list[str]:
        return list(self.routes)

    def route(self, model: str) -> DirectRoute:
        name = configured_name(model, list(self.routes))
        if name is None:
            raise ModelNotFound(f"the model {model!r} does not exist on this gateway",
                                param="model", code="model_not_found")
        return self.routes[name]

    def request(self, params: UpstreamParams, stream: bool) -> httpx.Request:
        requested = str(params["model"])
        route = self.route(requested)
        body = {k: v for k, v in params.items() if k != "extra_body"}
        body.update(params.get("extra_body") or {})  # the client's OpenAI metadata
        body["model"] = route.upstream_model(requested)
        body["stream"] = stream
        if not stream:
            body.pop("stream_options", None)
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        timeout = route.stream_timeout if stream else route.timeout
        return self.client.build_request("POST", route.url, content=content,
                                         headers=route.headers, timeout=timeout)

    async def complete(self, params: UpstreamParams) -> ChatCompletion:
        model = str(params["model"])
        with map_http_errors(self.redact, model):
            try:
                async with asyncio.timeout(self.route(model).deadline_s):
                    response = await self.send(self.request(params, stream=False))
                    try:
                        body = await self.read(response, model)
                    finally:
                        await response.aclose()
            except TimeoutError:
                upstream_said(self.redact, model, "timed out", "no reply by its deadline")
                raise UpstreamTimeout(f"upstream for model {model!r} timed out",
                                      code="upstream_timeout") from None
        completion = upstream_json(body, model)
        if not isinstance(completion, dict):
            raise UpstreamFailed(f"the upstream for model {model!r} did not answer with a chat "
                                 "completion", code="upstream_malformed")
        entered(completion, "message", model, body)
        for choice in completion["choices"]:
            choice.setdefault("finish_reason", None)
        return cast(ChatCompletion, completion)

    async def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        model = str(params["model"])
        reader = SSEReader(model, self.max_bytes, self.redact)
        with map_http_errors(self.redact, model):
            response = await self.send(self.request(params, stream=True))
            try:
                if response.status_code >= 400:
                    await self.read(response, model)  # raises the mapped error
                async for chunk in reader.chunks(response.aiter_bytes()):
                    yield chunk
            finally:
                await response.aclose()

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response's head. A pooled keep-alive connection that the upstream closed as the
        request went out on it (it ended cleanly, without a byte of a response: its keep-alive
        ran out) is tried once more on a new one, as HTTP clients do. Nothing else is: a new
        connection that ends without a response, or any connection reset after the request was
        written, may have reached an upstream that worked on the request, and a second send
        would run (and bill) it twice."""
        opening = Opening()
        request.extensions["trace"] = opening
        try:
            return await self.client.send(request)
        except httpx.RemoteProtocolError as exc:
            if opening.opened or NO_RESPONSE not in str(exc):
                raise
        del request.extensions["trace"]
        return await self.client.send(request)

    async def read(self, response: httpx.Response, model: str) -> bytes:
        """The body, at most ``max_bytes`` of it; an error status raises its GatewayError."""
        body = bytearray()
        async for piece in response.aiter_bytes():
            body += piece
            if len(body) > self.max_bytes:
                raise UpstreamFailed(
                    f"the reply from the upstream for model {model!r} is larger than "
                    f"upstream.max_response_bytes ({self.max_bytes})", code="upstream_too_large")
        if response.status_code >= 400:
            message, param, code = error_fields(bytes(body))
            raise upstream_status_error(response.status_code, message, model,
                                        response.headers.get("retry-after"), self.redact,
                                        param, code, wildcard="*" in self.route(model).name)
        return bytes(body)

    async def aclose(self) -> None:
        await self.client.aclose()


def error_fields(body: bytes) -> tuple[str, object, object]:
    """The message, ``param`` and ``code`` of an upstream's error reply (OpenAI's envelope;
    else its text as the message). The message is for the log only: ``upstream_said`` redacts
    it, then cuts it, so a secret across the cut never survives in part. A body over
    ``ERROR_BODY_BYTES`` is not parsed: its start is the message (no error envelope is that
    long; 30 MB of JSON was parsed and dumped again on the event loop for 0.2-3 s)."""
    if len(body) > ERROR_BODY_BYTES:
        return body[:ERROR_BODY_BYTES].decode("utf-8", "replace"), None, None
    try:
        data = json.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"]), error.get("param"), error.get("code")
        return json.dumps(data), None, None
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        return body.decode("utf-8", "replace"), None, None


class SplitUpstream:
    """Direct routes for their models, LiteLLM's Router for the rest: a request's model is
    resolved against the whole ``model_list`` in its order, as the Router would."""

    def __init__(self, names: Sequence[str], direct: DirectUpstream,
                 router: Upstream | None) -> None:
        self.names = list(dict.fromkeys(names))
        self.direct = direct
        self.router = router

    def pick(self, model: str) -> Upstream:
        name = configured_name(model, self.names)
        if self.router is None or name in self.direct.routes:
            return self.direct
        return self.router

    def serves(self, model: str) -> bool:
        return configured_name(model, self.names) is not None

    def model_names(self) -> list[str]:
        return list(self.names)

    async def complete(self, params: UpstreamParams) -> ChatCompletion:
        return await self.pick(str(params["model"])).complete(params)

    def stream(self, params: UpstreamParams) -> AsyncIterator[ChatCompletionChunk]:
        return self.pick(str(params["model"])).stream(params)

    async def aclose(self) -> None:
        await self.direct.aclose()


def build_upstream(config: GatewayConfig, redact: Redactor) -> Upstream:
    """The gateway's upstream under ``upstream.direct``: LiteLLM only when some model needs
    it (its import and Router cost start-up time and memory)."""
    from proxy.upstream import LiteLLMUpstream

    know_models(name for d in config.model_list
                for name in (d.model_name, str(d.litellm_params["model"])))
    routes = direct_routes(config)
    direct_names = {r.name for r in routes}
    rest = [d for d in config.model_list if d.model_name not in direct_names]
    router = LiteLLMUpstream(rest, config.router_settings, redact,
                             config.upstream.max_response_bytes) if rest else None
    if not routes:
        assert router is not None
        return router
    return SplitUpstream([d.model_name for d in config.model_list],
                         DirectUpstream(routes, config, redact), router)
