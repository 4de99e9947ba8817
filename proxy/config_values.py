"""Checks on config values that the settings' types alone do not express: LiteLLM's
``router_settings`` (handed to its Router as keyword arguments, so a wrong name or type would
fail in every worker's start-up, after ``vilmo serve`` had accepted the file) and the URL of an
OpenAI-compatible upstream."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from proxy.config_keys import ENV_PREFIX

UPSTREAM_TIMEOUT_MAX_S = 3600.0
"""The longest an upstream call may be given (``upstream.timeout_s``, a deployment's or the
Router's ``timeout``): a bound on how long a hung upstream holds a request."""

ROUTER_SETTINGS = frozenset({
    "alerting_config", "allowed_fails", "allowed_fails_policy", "assistants_config",
    "auto_router_capability_limit", "background_health_check_model_groups", "cache_kwargs",
    "cache_responses", "caching_groups", "client_ttl", "content_policy_fallbacks",
    "context_window_fallbacks", "cooldown_time", "debug_level", "default_fallbacks",
    "default_litellm_params", "default_max_parallel_requests", "default_priority",
    "deployment_affinity_ttl_seconds", "disable_cooldowns", "enable_health_check_routing",
    "enable_mid_stream_fallback_continuation", "enable_pre_call_checks",
    "enable_tag_filtering", "enable_weighted_failover", "fallback_access_check",
    "fallback_budget_check", "fallback_on_unsupported_params", "fallbacks", "guardrail_list",
    "health_check_ignore_transient_errors", "health_check_staleness_threshold",
    "ignore_invalid_deployments", "max_fallbacks", "model_group_affinity_config",
    "model_group_alias", "model_group_retry_policy", "num_retries", "optional_pre_call_checks",
    "plugins", "polling_interval", "provider_budget_config", "redis_db", "redis_host",
    "redis_password", "redis_port", "redis_url", "retry_after", "retry_policy",
    "router_general_settings", "routing_groups", "routing_strategy", "routing_strategy_args",
    "search_tools", "session_affinity_repin_on_failover", "set_verbose", "stream_timeout",
    "tag_filtering_match_any", "tag_routing_prefix", "timeout",
})
"""The installed LiteLLM Router's keyword arguments (1.110), but the ``model_list`` the
gateway gives: what a config may set (``tests/proxy/test_config_checks.py`` checks it equals
the signature: regenerate it when LiteLLM is upgraded). Not read from LiteLLM itself:
importing it costs seconds, and the config is checked before any worker starts."""


def _text(value: Any) -> Any:
    """A YAML number where a text is wanted (``redis_password: 12345678``), as its text."""
    return str(value) if type(value) is int else value


class RouterSettings(BaseModel):
    """Types of the settings the gateway reads itself (``proxy.direct``) or that are easily
    mistyped; every other allowed name is passed on as written."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    num_retries: int | None = Field(None, ge=0, le=100)
    max_fallbacks: int | None = Field(None, ge=0, le=100)
    allowed_fails: int | None = Field(None, ge=0)
    retry_after: int | None = Field(None, ge=0)
    client_ttl: int | None = Field(None, gt=0)
    redis_port: int | None = Field(None, ge=1, le=65535)
    redis_db: int | None = Field(None, ge=0)
    redis_url: str | None = None
    redis_host: str | None = None
    redis_password: Annotated[str | None, BeforeValidator(_text)] = None
    timeout: float | None = Field(None, gt=0, le=UPSTREAM_TIMEOUT_MAX_S)
    stream_timeout: float | None = Field(None, gt=0, le=UPSTREAM_TIMEOUT_MAX_S)
    cooldown_time: float | None = Field(None, ge=0)
    polling_interval: float | None = Field(None, gt=0)
    routing_strategy: str | None = None
    default_fallbacks: list[str] | None = None
    fallbacks: list[dict[str, list[str] | str]] | None = None
    context_window_fallbacks: list[dict[str, list[str] | str]] | None = None
    content_policy_fallbacks: list[dict[str, list[str] | str]] | None = None
    cache_responses: bool | None = None
    set_verbose: bool | None = None


def checked_router_settings(settings: dict[str, Any],
                            ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``settings`` as the Router takes them (numbers given as text converted), and
    (setting, message) for each one the Router would refuse. Values are never quoted: a Redis
    password lives here."""
    issues = [(str(name), _unknown(str(name))) for name in settings if name not in ROUTER_SETTINGS]
    defaults = settings.get("default_litellm_params")
    if isinstance(defaults, dict) and (problem := unbounded_provider(defaults)):
        issues.append(("default_litellm_params", problem))
    try:
        checked = RouterSettings.model_validate(settings)
    except ValidationError as error:
        issues += [(".".join(str(part) for part in e["loc"]), e["msg"]) for e in error.errors()]
        return settings, issues
    return checked.model_dump(exclude_unset=True), issues


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, ROUTER_SETTINGS, n=1)
    return "not one of LiteLLM's Router settings" + (f" (did you mean {close[0]}?)"
                                                      if close else "")


def http_url_problem(url: object) -> str | None:
    """Why ``url`` cannot be an OpenAI-compatible upstream's base URL, or None. Never quotes
    it (it may carry credentials)."""
    if not isinstance(url, str):
        return "must be an http:// or https:// URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "is not a valid URL (expected http(s)://host[:port]/path)"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ("must be an http:// or https:// URL with a host, e.g. "
                "http://127.0.0.1:8000/v1 (the URL is not shown: it may hold a credential)")
    return None


MAX_NESTING = 32
"""How deep ``os.environ/NAME`` references are looked for (a header map is two levels down)."""


def resolve_nested(value: Any, field: str, issues: list[tuple[str, str]],
                   depth: int = 0) -> Any:
    """``value`` with each ``os.environ/NAME`` string in it, at any depth, replaced by the
    variable's value (redacted as any value there is: ``GatewayConfig.secrets``); a (field,
    message) issue for an unset variable or nesting past ``MAX_NESTING``. Messages never quote
    a value."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        resolved = os.environ.get(name)
        if resolved is None:
            issues.append((field, f"environment variable {name} is not set"))
            return value
        return resolved
    if depth >= MAX_NESTING and isinstance(value, dict | list):
        issues.append((field, f"nested deeper than {MAX_NESTING} levels"))
        return value
    if isinstance(value, dict):
        return {key: resolve_nested(inner, f"{field}.{key}", issues, depth + 1)
                for key, inner in value.items()}
    if isinstance(value, list):
        return [resolve_nested(inner, f"{field}.{i}", issues, depth + 1)
                for i, inner in enumerate(value)]
    return value


def deployment_issues(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, message) for each resolved ``litellm_params`` value the gateway uses that
    would fail every call: an ``openai/`` model's ``api_base`` that is not an http(s) URL
    (httpx: UnsupportedProtocol), a timeout that is not a finite number of seconds."""
    issues = []
    if problem := unbounded_provider(params):
        issues.append(("model", problem))
    if str(params.get("model", "")).startswith("openai/") and params.get("api_base"):
        problem = http_url_problem(params["api_base"])
        if problem:
            issues.append(("api_base", problem))
    for name in ("timeout", "stream_timeout"):
        if params.get(name) is not None and not _seconds(params[name]):
            issues.append((name, (f"must be a finite number of seconds, more than 0 and at most "
                                 f"{UPSTREAM_TIMEOUT_MAX_S:g}")))
    return issues


UNBOUNDED_PROVIDERS = ("aiohttp_openai",)
"""LiteLLM providers that call with aiohttp itself, not through an httpx client: none of the
Router path's bounds on a reply (``proxy.upstream_bounds``: its size, a stream event's, a plain
reply's deadline), nor its no-cookie and no-redirect clients (``proxy.litellm_clients``), would
hold, so such a model is refused (``openai/`` reaches the same servers, bounded)."""


def unbounded_provider(params: Mapping[str, Any]) -> str | None:
    """Why LiteLLM would call a deployment (its ``litellm_params``, or the Router's defaults
    for each) with an unbounded client, or None: the provider LiteLLM takes for it
    (``get_llm_provider``: its ``custom_llm_provider`` when one is set, else its model's
    ``provider/`` prefix) is one of ``UNBOUNDED_PROVIDERS``, in any case. A model named
    ``aiohttp_openai/x`` with ``custom_llm_provider: openai`` is called as ``openai/``."""
    custom = params.get("custom_llm_provider")
    provider = (custom if isinstance(custom, str) and custom.strip()
                else str(params.get("model", "")).split("/", 1)[0])
    if isinstance(provider, str) and provider.strip().lower() in UNBOUNDED_PROVIDERS:
        return (f"LiteLLM's {provider.strip().lower()} provider calls with aiohttp, outside "
                "the bounds the gateway sets on an upstream's reply (its size, its time): "
                "use openai/ for the same OpenAI-compatible server")
    return None


def _seconds(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return False
    return 0 < seconds <= UPSTREAM_TIMEOUT_MAX_S  # NaN and infinity fail here
