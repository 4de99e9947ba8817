"""The gateway's configuration: one YAML file, or embedded defaults from the environment.

Top-level keys: ``model_list`` and ``router_settings`` (LiteLLM's format), ``upstream``,
``policy_dir``, ``default_policy``, ``strict_params``, ``auth``, ``server``, ``audit``, ``store``. An unknown key is an
error that names it. Secrets are written ``os.environ/NAME`` (at any depth of ``litellm_params``
and ``router_settings``) and resolved here, so a missing variable is reported at start-up with
the field that needs it.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.config_keys import ENV_PREFIX, key_long_enough, resolved_key
from proxy.config_values import (
    UPSTREAM_TIMEOUT_MAX_S,
    checked_router_settings,
    deployment_issues,
    http_url_problem,
    resolve_nested,
)
from proxy.key_config import KeyBinding
from proxy.store.config import StoreSettings
from vilmo.policy_store import SHIPPED_POLICY_DIR
from vilmo.yamlfile import FileError, FileIssue, load_yaml_model

CONFIG_ENV = "VILMO_CONFIG"
"""The config file's path for each worker process (unset: the embedded defaults)."""
OPERATOR_KEYS = ("admin_key", "metrics_key")


class ConfigError(FileError):
    """The gateway's configuration cannot be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf is no bound


class Deployment(BaseModel):
    """One entry of LiteLLM's ``model_list``: the public name and how to reach it."""

    model_config = ConfigDict(extra="allow")
    model_name: str = Field(min_length=1)
    litellm_params: dict[str, Any]
    allowed_params: list[str] = Field(
        default_factory=list, description="Request fields beyond the OpenAI ones that clients "
        "may send to this model (e.g. top_k); vilmo's, not passed to LiteLLM.")

    def router_entry(self) -> dict[str, Any]:
        """The entry as LiteLLM's Router takes it."""
        return self.model_dump(exclude={"allowed_params"})

    @field_validator("litellm_params")
    @classmethod
    def _has_model(cls, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("model"):
            raise ValueError("litellm_params.model is required (e.g. 'openai/gpt-4o-mini')")
        return params


PublicPath = Literal["/healthz", "/metrics", "/openapi.json"]


class AuthSettings(_Strict):
    keys: list[KeyBinding] = Field(
        default_factory=list, description="Client keys; empty means no key is required.")
    allow_policy_header: bool = Field(
        True, description="Without keys: whether X-Vilmo-Policy may choose any loaded policy.")
    public_paths: list[PublicPath] = Field(
        default_factory=lambda: list[PublicPath](["/healthz"]),
        description="Paths served without a key when keys are set; every other path needs one.")
    admin_key: str | None = Field(
        None, description="Enables the admin API (`/admin/...`, `/dashboard`) and opens "
        "`/metrics`: the key itself or os.environ/NAME, 16+ characters. Set, client keys are "
        "required on every path.")
    metrics_key: str | None = Field(
        None, description="Opens `/metrics` and nothing else (a scraper's credential): the key "
        "itself or os.environ/NAME, 16+ characters. Client keys do not open `/metrics`.")
    require_admin_key: bool = Field(
        False, description="Refuse to start without `admin_key` (docker-compose sets it).")

    @field_validator(*OPERATOR_KEYS)
    @classmethod
    def _long_enough(cls, key: str | None) -> str | None:
        return key if key is None else key_long_enough(key)

    @property
    def keys_required(self) -> bool:
        """Whether a request needs a key (client keys or the admin key are set)."""
        return bool(self.keys) or self.admin_key is not None


HOST_NAME = re.compile(r"\*|(\*\.)?[A-Za-z0-9_.-]+")
"""An ``allowed_hosts`` entry that is no IPv6 address: a name or IPv4 address (no port),
``*.domain``, or ``*``."""


def _allowed_host(entry: str) -> str:
    """An entry ``proxy.trusted_host`` can match: it compares names without their port, so an
    entry with one (``10.0.0.5:4000``) would never match; a ``:`` is an IPv6 address's only."""
    if ":" in entry:
        try:
            ipaddress.ip_address(entry.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise ValueError(f"{entry[:64]!r}: an allowed host has no port (any port is "
                             "served) and no scheme; a ':' only in an IPv6 address such as "
                             "[::1]") from None
        return entry
    if not HOST_NAME.fullmatch(entry):
        raise ValueError(f"{entry[:64]!r} is not a host name (no port, scheme or path), "
                         "*.domain, an IP address or *")
    return entry


class ServerSettings(_Strict):
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    policy_reload_interval_s: float = Field(1.0, ge=0.0, le=3600.0)
    max_n: int = Field(8, ge=1, description="The largest `n` a request may ask for.")
    max_tokens: int = Field(
        32768, ge=1, description="The largest max_tokens / max_completion_tokens a request may "
                                 "ask for.")
    tpm_default_max_tokens: int = Field(
        4096, ge=1, description="Reply tokens per choice held for a request to a virtual key "
        "with `tpm` that sets no max_tokens (at most `max_tokens`, and at most a quarter of the "
        "key's tpm across its choices); its replies are capped there. Requests on keys without "
        "tpm are forwarded as sent.")
    keep_alive_s: int = Field(
        75, ge=1, description="Seconds an idle client connection is kept open (uvicorn's "
        "timeout_keep_alive). Longer than the clients' own idle expiry (httpx and the openai "
        "client: 5 s; load balancers: 60 s), so the client always drops an idle connection "
        "first: a server that closes it as the client reuses it fails that request.", le=3600)
    request_read_timeout_s: float = Field(
        60.0, gt=0, description="Seconds a client has to send a whole request, head and body, "
        "from its first byte (a new connection: from connecting); past it the gateway answers "
        "408 and closes the connection (`proxy.server`), so slow clients cannot hold workers.",
        le=3600.0)
    limit_concurrency: int = Field(
        1024, ge=1, description="Connections (and requests in flight) one worker serves at "
        "once; one more is answered 503 and closed. Keep it under the file limit (`ulimit -n`) "
        "less `upstream.max_connections`.")
    allowed_hosts: list[Annotated[str, AfterValidator(_allowed_host)]] | None = Field(
        None, description="Host names the gateway answers to (the `Host` header, any port; "
        "`*.example.com`: its subdomains; `\"*\"`: any); another is a 421 `host_not_allowed` "
        "(`proxy.trusted_host`: DNS rebinding). null: localhost, 127.0.0.1 and [::1] while "
        "no client key is required, any name once keys are.")


class AuditSettings(_Strict):
    path: Path | None = Field(None, description="JSON Lines file; default: in memory only.")
    memory_records: int = Field(1000, ge=0)
    max_file_bytes: int | None = Field(
        100 * 1024 * 1024, ge=4096, description="The JSON Lines file is rotated before a record "
        "would take it past this size (to `<path>.1`, the older ones to `.2`...); a record is "
        "never split nor lost, whatever the workers. null: never rotated (rotate it yourself, "
        "e.g. logrotate with `create`).")
    rotated_files: int = Field(
        5, ge=1, le=1000, description="Rotated files kept (`<path>.1` the newest); the oldest "
        "past them is deleted. On disk at most (rotated_files + 1) * max_file_bytes.")


DirectMode = Literal["auto", "always", "never"]


class UpstreamSettings(_Strict):
    """How the gateway reaches OpenAI-compatible upstreams (``proxy.direct``)."""

    direct: DirectMode = Field(
        "auto", description="auto: a model whose deployment is one `openai/...` entry with an "
        "`api_base` (or VILMO_UPSTREAM_BASE) and no router fallbacks is called directly "
        "(`/v1/chat/completions` over one pooled HTTP client), every other model through "
        "LiteLLM's Router; always: every model directly (a model that cannot be is a start-up "
        "error); never: every model through LiteLLM's Router.")
    timeout_s: float = Field(
        600.0, gt=0, description="Direct calls: seconds to wait for the upstream's response "
        "(or for each chunk of a stream); a deployment's `timeout` or router_settings' "
        "`timeout` takes precedence.", le=UPSTREAM_TIMEOUT_MAX_S)
    connect_timeout_s: float = Field(10.0, gt=0, le=300.0,
                                     description="Direct calls: to connect.")
    max_response_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="Both paths (direct calls and LiteLLM's Router): "
        "the largest reply body (or whole stream) read from an upstream, counted decoded; past "
        "it the call fails with 502 upstream_too_large.")
    max_connections: int = Field(
        256, ge=1, description="Direct calls: connections the pooled client keeps open.")


class GatewayConfig(_Strict):
    model_list: list[Deployment] = Field(min_length=1)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    policy_dir: Path = SHIPPED_POLICY_DIR
    default_policy: str = "default"
    strict_params: bool = Field(
        False, description="A request field outside the allow-list is a 400, not dropped.")
    auth: AuthSettings = Field(default_factory=AuthSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @model_validator(mode="after")
    def _admin_key_where_required(self) -> GatewayConfig:
        """Secure by default: a gateway asked to require an admin key, or one sharing its state
        through Redis (a deployment, not a laptop), does not start without one."""
        if self.auth.admin_key is None and (self.auth.require_admin_key or self.store.url):
            raise ValueError("auth.admin_key is required (auth.require_admin_key is set, or "
                             "store.url points at a shared store): set "
                             "auth.admin_key: os.environ/VILMO_ADMIN_KEY")
        return self

    def secrets(self) -> list[str]:
        """Every upstream credential (also nested, e.g. in ``extra_headers``; read from the
        environment or not) and client key, for redaction. Only credentials: an ``api_base``,
        an ``api_version`` or a model name is no secret, wherever it was read from, and the
        audit trail and logs keep it."""
        found = [s for d in self.model_list for s in _secret_values(d.litellm_params)]
        found += list(_secret_values(self.router_settings)) + [k.key for k in self.auth.keys]
        extra = [self.auth.admin_key, self.auth.metrics_key, self.store.url,
                 *_url_secrets(self.store.url or "")]
        return found + [s for s in extra if s]

    def allowed_params(self, model: str) -> frozenset[str]:
        """The extra request fields the model_list entry serving ``model`` allows."""
        name = configured_name(model, [d.model_name for d in self.model_list])
        return frozenset(p for d in self.model_list if d.model_name == name
                         for p in d.allowed_params)


_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "auth", "header")


def _secret_values(value: Any, secret: bool = False) -> Iterator[str]:
    """String values under a secret-looking name (or anywhere below one, as header values
    are), and the credential after an ``Authorization`` scheme (``Bearer X``: also ``X``)."""
    if isinstance(value, dict):
        for name, inner in value.items():
            named = secret or any(word in str(name).lower() for word in _SECRET_WORDS)
            yield from _secret_values(inner, named)
    elif isinstance(value, list):
        for inner in value:
            yield from _secret_values(inner, secret)
    elif secret and isinstance(value, str) and value:
        yield value
        scheme, _, credential = value.partition(" ")
        if credential and scheme.lower() in ("bearer", "basic", "token"):
            yield credential.strip()
    elif isinstance(value, str) and "://" in value:  # an ``api_base`` may carry credentials
        yield from _url_secrets(value)


def _url_secrets(url: str) -> Iterator[str]:
    """The credentials a URL carries: its user-info (``https://user:pass@host``, or a token
    as the user) and the values of secret-looking query parameters (``?api-key=...``)."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return
    yield from (s for s in (password, username if password is None else None) if s)
    for name, value in parse_qsl(parts.query):
        if value and any(word in name.lower() for word in (*_SECRET_WORDS, "sig")):
            yield value


def configured_name(model: str, names: Sequence[str]) -> str | None:
    """The ``model_name`` of the model_list entry that serves ``model``: an exact name first,
    else the first pattern (``stub-*``) that matches; None when none does."""
    if not model or model in names:
        return model or None
    return next((name for name in names if fnmatch.fnmatchcase(model, name)), None)


def load_config(path: str | Path) -> GatewayConfig:
    """Read, validate and resolve a config file; ConfigError names file, line and field."""
    config = load_yaml_model(path, GatewayConfig, ConfigError)
    if not config.policy_dir.is_absolute():
        config.policy_dir = (Path(path).parent / config.policy_dir).resolve()
    return resolve_environment(config, str(path))


def default_config() -> GatewayConfig | None:
    """The embedded defaults: an OpenAI-compatible upstream from the environment, or None.

    ``OPENAI_API_KEY`` (and optionally ``OPENAI_BASE_URL``) routes every model name to that
    upstream; ``VILMO_UPSTREAM_BASE`` names any OpenAI-compatible server (e.g. a local one).
    """
    base = os.environ.get("VILMO_UPSTREAM_BASE") or os.environ.get("OPENAI_BASE_URL")
    key = os.environ.get("OPENAI_API_KEY")
    if not key and not os.environ.get("VILMO_UPSTREAM_BASE"):
        return None
    params: dict[str, Any] = {"model": "openai/*", "api_key": key or "none"}
    if base:
        problem = http_url_problem(base)
        if problem:
            name = "VILMO_UPSTREAM_BASE" if os.environ.get("VILMO_UPSTREAM_BASE") \
                else "OPENAI_BASE_URL"
            raise ConfigError([FileIssue("environment", None, name, problem)])
        params["api_base"] = base
    return GatewayConfig(model_list=[Deployment(model_name="*", litellm_params=params)])


def config_from_environment() -> GatewayConfig:
    """The config a worker process serves: the file named by ``VILMO_CONFIG``, else the
    embedded defaults; ConfigError when neither gives an upstream."""
    path = os.environ.get(CONFIG_ENV)
    if path:
        return load_config(path)
    config = default_config()
    if config is None:
        raise ConfigError([FileIssue("environment", None, "model_list", NO_UPSTREAM_HELP)])
    return config


NO_UPSTREAM_HELP = """\
vilmo serve: no upstream model is configured, so there is nothing to proxy to.
Add one of:
  export OPENAI_API_KEY=sk-...            # any model name goes to OpenAI
  export VILMO_UPSTREAM_BASE=http://127.0.0.1:8000/v1   # any OpenAI-compatible server
  vilmo serve --config gateway.yaml       # a LiteLLM model_list (see README, Configuration)"""


def resolve_environment(config: GatewayConfig, source: str) -> GatewayConfig:
    """Replace ``os.environ/NAME`` values, also nested (``extra_headers``); a missing variable
    is a ConfigError naming the field. Then check what only resolved values show: an
    upstream's URL and timeouts, the Router's settings."""
    issues: list[FileIssue] = []
    for i, deployment in enumerate(config.model_list):
        where = f"model_list.{i}.litellm_params"
        nested: list[tuple[str, str]] = []
        deployment.litellm_params = resolve_nested(deployment.litellm_params, where, nested)
        if not nested:  # an unset variable is the issue, not its reference's text
            nested = [(f"{where}.{name}", message)
                      for name, message in deployment_issues(deployment.litellm_params)]
        issues += [FileIssue(source, None, field, message) for field, message in nested]
    nested = []
    router = resolve_nested(config.router_settings, "router_settings", nested)
    if not nested:
        config.router_settings, wrong = checked_router_settings(router)
        nested = [(f"router_settings.{name}", message) for name, message in wrong]
    issues += [FileIssue(source, None, field, message) for field, message in nested]
    for field in OPERATOR_KEYS:
        reference = getattr(config.auth, field)
        if reference is not None and reference.startswith(ENV_PREFIX):
            setattr(config.auth, field,
                    resolved_key(reference, f"auth.{field}", source, issues) or reference)
    for i, binding in enumerate(config.auth.keys):
        if binding.key.startswith(ENV_PREFIX):
            binding.key = (resolved_key(binding.key, f"auth.keys.{i}.key", source, issues)
                           or binding.key)
    if issues:
        raise ConfigError(issues)
    return config
