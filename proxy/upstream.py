"""Calls to upstream models through a LiteLLM Router (any provider, retries, fallbacks).

The ``Upstream`` protocol is the seam the pipeline sees: OpenAI-shaped dicts in and out, and
``GatewayError``s for failures (mapped here, where LiteLLM's exceptions enter).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from typing import Any, Protocol, TypeAlias, cast

from proxy.config_values import unbounded_provider
from proxy.errors import Redactor, UpstreamFailed, map_upstream_errors
from proxy.fields import StreamLabels, keep_allowed
from proxy.litellm_clients import no_cookies, own_litellm_clients, refuse_unbounded_model
from proxy.protocol import UpstreamParams
from proxy.replies import ChatCompletion, ChatCompletionChunk
from proxy.router_choices import ChoiceEnds
from proxy.settings import Deployment, configured_name
from proxy.upstream_bounds import DEFAULT_MAX_BYTES, ReplyBounds, bounds_for
from proxy.wellformed import NotFinite, make_well_formed, parse_upstream, parse_upstream_event

__all__ = ["LiteLLMUpstream", "Upstream", "entered", "no_cookies", "open_stream", "upstream_json"]

Completion: TypeAlias = ChatCompletion
Chunk: TypeAlias = ChatCompletionChunk


class Upstream(Protocol):
    """Where completions come from."""

    def serves(self, model: str) -> bool: ...

    def model_names(self) -> list[str]: ...

    async def complete(self, params: UpstreamParams) -> Completion: ...

    def stream(self, params: UpstreamParams) -> AsyncIterator[Chunk]: ...


class LiteLLMUpstream:
    """A LiteLLM Router over the config's ``model_list``. What each call reads of a reply is
    bounded as on the direct path (``proxy.upstream_bounds``): ``max_response_bytes`` of it,
    a stream event's ``proxy.relay.MAX_EVENT_BYTES`` (both 502 ``upstream_too_large``), a plain
    reply's time by its timeout (504), an error body's text to its head."""

    def __init__(self, model_list: Sequence[Deployment], router_settings: dict[str, Any],
                 redact: Redactor, max_response_bytes: int = DEFAULT_MAX_BYTES) -> None:
        from litellm.router import Router  # heavy import: only when the gateway is built

        from proxy.operator_body import keep_operator_bodies  # imports LiteLLM too
        from proxy.router_fields import send_openai_only_fields_per_attempt

        refuse_unbounded(model_list, router_settings)
        one_line_logs(*LITELLM_LOGGERS)
        own_litellm_clients()
        fetch_no_media_urls()
        forgive_lost_context_resets()
        self._names = [d.model_name for d in model_list]
        self._router = Router(model_list=[d.router_entry() for d in model_list],
                              **with_router_defaults(router_settings))
        keep_operator_bodies(self._router.model_list)
        send_openai_only_fields_per_attempt()
        self._redact = redact
        self._deployments, self._defaults = (self._router.model_list,
                                             router_settings.get("default_litellm_params"))
        self._plain = ReplyBounds(max_response_bytes, redact=redact, deadline=True)
        self._stream = ReplyBounds(max_response_bytes, redact=redact)

    def serves(self, model: str) -> bool:
        return configured_name(model, self._names) is not None

    def model_names(self) -> list[str]:
        return list(dict.fromkeys(self._names))

    def _wildcard(self, model: str) -> bool:
        """Whether the entry serving ``model`` is a pattern (its 404 is the caller's)."""
        return "*" in (configured_name(model, self._names) or "")

    def wire_params(self, params: UpstreamParams) -> UpstreamParams:
        """The call's arguments: OpenAI's own fields (and ``user``) go to each attempt as its
        provider takes them (``proxy.router_fields``). A deployment's configured
        ``extra_body`` is kept under it (``proxy.operator_body``). Imported here: the module
        imports LiteLLM, which a gateway on the direct path never loads."""
        from proxy.router_fields import carried

        return carried(params)

    async def complete(self, params: UpstreamParams) -> Completion:
        model = str(params["model"])
        with map_upstream_errors(self._redact, model, wildcard=self._wildcard(model)), \
                bounds_for(self._plain):
            refuse_unbounded_model(self._deployments, model, self._defaults)
            response = await self._router.acompletion(**self.wire_params(params))
        reply = wire_dict(response.model_dump(exclude_none=True))
        entered(reply, "message", model)
        return cast(Completion, reply)

    async def stream(self, params: UpstreamParams) -> AsyncIterator[Chunk]:
        model = str(params["model"])
        with map_upstream_errors(self._redact, model, wildcard=self._wildcard(model)), \
                bounds_for(self._stream):
            refuse_unbounded_model(self._deployments, model, self._defaults)
            response = await self._router.acompletion(**{**self.wire_params(params),
                                                         "stream": True})
        # the upstream answered: a failure from here on is not "unreachable"
        with map_upstream_errors(self._redact, model, reached=True):
            labels, ends = StreamLabels(), ChoiceEnds(params.get("n"))
            try:
                async for chunk in response:
                    piece = wire_dict(chunk.model_dump(exclude_none=True))
                    for out in ends.note(piece):  # each choice's role (LiteLLM's n > 1)
                        entered(out, "delta", model, stream=labels)
                        yield cast(Chunk, out)
                if (ending := ends.ending()) is not None:  # choices LiteLLM left unfinished
                    entered(ending, "delta", model, stream=labels)
                    yield cast(Chunk, ending)
            finally:
                close = getattr(response, "aclose", None)
                if close is not None:
                    await close()


def refuse_unbounded(model_list: Sequence[Deployment], router_settings: dict[str, Any]) -> None:
    """A ValueError for a deployment LiteLLM would call outside the bounds
    (``proxy.config_values.unbounded_provider``): a loaded config is refused so already, a
    config built otherwise (``model_validate``) is refused here."""
    defaults = router_settings.get("default_litellm_params")
    for params in [d.litellm_params for d in model_list] + [defaults or {}]:
        if isinstance(params, dict) and (problem := unbounded_provider(params)):
            raise ValueError(problem)


def with_router_defaults(router_settings: dict[str, Any]) -> dict[str, Any]:
    """The Router's settings, with ``num_retries: 0`` unless the config sets it: LiteLLM's
    own default (2) sent each failing request three times, while the direct path (which takes
    a model only when no retries are configured, ``proxy.direct.why_not_direct``) sends it
    once. Retries are the operator's choice, as on the direct path."""
    settings = dict(router_settings)
    if settings.get("num_retries") is None:
        settings["num_retries"] = 0
    return settings


LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


def fetch_no_media_urls() -> None:
    """LiteLLM downloads a client's image (and PDF) URLs itself, in the gateway, for providers
    that take only bytes (Anthropic's ``http://`` images, Bedrock, Gemini, ...) and probes
    Anthropic's ``https://`` ones: up to 50 MB each, that no check sees, fetched from the
    gateway's network. Its switch, ``MAX_IMAGE_URL_DOWNLOAD_SIZE_MB = 0`` (an environment
    variable read once, when LiteLLM is imported), is set here in the module that reads it:
    such a URL is then the client's 400 (LiteLLM's ``ImageFetchError``), and providers that
    take URLs are sent them as they are."""
    from litellm.litellm_core_utils.prompt_templates import image_handling

    image_handling.MAX_IMAGE_URL_DOWNLOAD_SIZE_MB = 0  # type: ignore[attr-defined]


def forgive_lost_context_resets() -> None:
    """LiteLLM names the store each internal call is for in a context variable, set and reset
    around the call (``_internal_context.service_target``, used by the Router's cooldowns and
    client slots). Its ``_restore`` forgives a reset from another context (ValueError) but not
    one where the variable is no longer set (CPython's LookupError), which escaped now and then
    into a request as a 500 (seen under load on a stream without choices). Both mean there is
    nothing left to restore: wrapped once so LookupError is forgiven too."""
    from litellm import _internal_context as internal

    restore = internal._restore
    if getattr(restore, "forgives_lookups", False):
        return

    def forgiving(var: Any, token: Any) -> None:
        with suppress(LookupError):
            restore(var, token)

    forgiving.forgives_lookups = True  # type: ignore[attr-defined]
    internal._restore = forgiving


MEDIA_URL_REFUSED = "Image URL download is disabled"
"""LiteLLM's message when it would have downloaded a media URL (``fetch_no_media_urls``)."""


def no_media_url(model: str) -> str:
    """The client's reason for that 400, in the gateway's words (LiteLLM's stay in the log)."""
    return (f"the gateway downloads no image URL, and the upstream for model {model!r} takes "
            "this one only as bytes (Image URL download is disabled): send it as a data: URL")


FAILURE_REPORT = re.compile(r"(?:%s|[\w.]+)\(model=(?:%s|[^)]*)\)\x1b\[31m Exception |"
                            r"litellm\.router\.py::async_function_with_fallbacks\(\) - Error")
"""How LiteLLM's Router's records of a failed call begin (as format strings, or formatted by
LiteLLM's own filter): each failed attempt at INFO, then the failure at ERROR. The gateway
logs each failure once itself, with the request's id (``proxy.upstream_log``): these are
dropped."""


class FirstLineOnly(logging.Filter):
    """A record's first line that has any text, without a traceback: LiteLLM's Router logs
    each upstream failure over several lines (its advice on fallbacks, "Debug Information"),
    and the gateway promises one log line per error: LiteLLM's records of a failure
    (``FAILURE_REPORTS``) are dropped, the gateway's own line tells it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if FAILURE_REPORT.match(message):
            return False
        lines = message.strip().split("\n", 1)
        if lines[0] != message:
            record.msg, record.args = lines[0].strip(), None
        record.exc_info = record.exc_text = None
        return True


def one_line_logs(*names: str) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, FirstLineOnly) for f in logger.filters):
            logger.addFilter(FirstLineOnly())


_INTERNAL_FIELDS = ("provider_specific_fields", "_hidden_params", "_response_ms")


def wire_dict(obj: dict[str, Any]) -> dict[str, Any]:
    """LiteLLM's dump in OpenAI's shape: no LiteLLM-only fields, finish_reason always present."""
    for name in _INTERNAL_FIELDS:
        obj.pop(name, None)
    for choice in obj.get("choices", []):
        for name in _INTERNAL_FIELDS:
            choice.pop(name, None)
        choice.setdefault("finish_reason", None)
        for part in ("message", "delta"):
            inner: dict[str, Any] | None = choice.get(part)
            if isinstance(inner, dict):
                for name in _INTERNAL_FIELDS:
                    inner.pop(name, None)
    return obj


def upstream_json(raw: bytes, model: str) -> Any:
    """The JSON an upstream sent, or None when it is none; NaN or an infinity in it is a 502
    ``upstream_malformed`` (Python's ``json`` reads them, no client could)."""
    try:
        return parse_upstream(raw)
    except NotFinite as error:
        raise not_finite(model, error) from None
    except (ValueError, UnicodeDecodeError):
        return None


def upstream_event_json(raw: bytes, model: str) -> tuple[Any, bool]:
    """``upstream_json``, and whether no object in it has a key twice (``None, True`` for
    text that is no JSON)."""
    try:
        return parse_upstream_event(raw)
    except NotFinite as error:
        raise not_finite(model, error) from None
    except (ValueError, UnicodeDecodeError):
        return None, True


def entered(reply: dict[str, Any], part: str, model: str, raw: bytes | None = None,
            stream: StreamLabels | None = None) -> bool:
    """An upstream's reply (``part="message"``) or stream chunk (``"delta"``) as it enters the
    gateway, on every path: made well formed in place (``make_well_formed``: a lone surrogate
    replaced; ``raw``, the bytes it was parsed from, lets the walk be skipped), a NaN or
    infinite number in it a 502 ``upstream_malformed``, its choices as the gateway reads them
    (``checked_choices``), and only its allow-listed fields kept (``proxy.fields``: nothing
    outside the checked message or delta carries text; ``stream``: a stream's labels, its
    first chunk's throughout). True when it was changed (the direct path then encodes it again
    instead of relaying its bytes)."""
    try:
        changed = make_well_formed(reply, raw)
    except NotFinite as error:
        raise not_finite(model, error) from None
    checked_choices(reply, part, model)
    return keep_allowed(reply, part, model, stream) or changed


def not_finite(model: str, error: NotFinite) -> UpstreamFailed:
    """The failure for upstream JSON holding NaN or an infinity (no client can read it)."""
    return UpstreamFailed(f"the upstream for model {model!r} sent a number that is not finite "
                          f"({error})", code="upstream_malformed")


def checked_choices(reply: dict[str, Any], part: str, model: str) -> dict[str, Any]:
    """The reply (``part="message"``) or stream chunk (``"delta"``) of an upstream, once its
    choices are as the gateway reads them: a list (a chunk's may be missing or null) of
    objects with distinct integer indexes, each ``part`` an object or null. Anything else is
    a 502 ``upstream_malformed``, never a crash, and never two choices under one index (of
    which only one would be checked)."""
    choices = reply.get("choices")
    problem = (_malformed(choices, part) if choices is not None or part == "message"
               else None)
    if problem is not None:
        raise UpstreamFailed(f"the upstream for model {model!r} sent {problem}",
                             code="upstream_malformed")
    return reply


def _malformed(choices: object, part: str) -> str | None:
    """What is wrong with an upstream's ``choices``, or None."""
    if not isinstance(choices, list):
        return "choices that are not a list"
    seen: set[int] = set()
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            return "a choice that is not an object"
        index = choice.get("index", position)
        if type(index) is not int or index < 0:
            return "a choice whose index is not a whole number"
        if index in seen:
            return f"two choices with index {index}"
        seen.add(index)
        if choice.get(part) is not None and not isinstance(choice[part], dict):
            return f"a choice whose {part} is not an object"
    return None


class Closing(AsyncIterator[Chunk]):
    """``chunks`` (a generator reading ``source``) whose ``aclose`` closes ``source`` too, also
    when nothing was read yet: a generator closed before it started never runs its
    ``finally``, so the upstream call under it would stay open until collected."""

    def __init__(self, chunks: AsyncIterator[Chunk], source: AsyncIterator[Chunk]) -> None:
        self.chunks = chunks
        self.source = source

    def __aiter__(self) -> Closing:
        return self

    async def __anext__(self) -> Chunk:
        return await anext(self.chunks)

    async def aclose(self) -> None:
        try:
            await self.chunks.aclose()  # type: ignore[attr-defined]
        finally:
            await self.source.aclose()  # type: ignore[attr-defined]


MAX_HELD_CHUNKS = 16
"""Chunks without choices held before the first with one (Azure sends one or two): past it,
the stream is malformed (what is held is bounded on either path, not only by the deadline)."""


async def open_stream(upstream: Upstream, params: UpstreamParams) -> AsyncIterator[Chunk]:
    """Start the upstream stream and wait for its first chunk with choices, so that an upstream
    failure before any output still gets its own HTTP status (429, 502, 504) instead of a 200.
    Chunks without choices before it (Azure's ``prompt_filter_results``; a stream of nothing
    else fails with no finish_reason) are held until then, on either upstream path."""
    chunks = upstream.stream(params)
    held: list[Chunk] = []
    try:
        async for chunk in chunks:
            held.append(chunk)
            if chunk.get("choices"):
                break
            if len(held) > MAX_HELD_CHUNKS:
                raise UpstreamFailed(f"the upstream for model {params['model']!r} sent "
                                     f"{len(held)} chunks without a choice",
                                     code="upstream_malformed")
    except BaseException:
        await chunks.aclose()  # type: ignore[attr-defined]
        raise

    async def replay() -> AsyncIterator[Chunk]:
        try:
            for chunk in held:
                yield chunk
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    return Closing(replay(), chunks)
