"""A served gateway (uvicorn in a thread) with fakes behind its model seams and a real store
(SQLite in a temporary folder, or the real Redis under a test prefix): the admin API, virtual
keys, limits and the audit trail through HTTP, with no model loaded. With ``stub_url`` the
upstream is the real LiteLLM adapter on the stub upstream server; else ``FakeUpstream``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fakes import FakeUpstream, fake_services
from store_gateway import ADMIN
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.errors import Redactor
from proxy.services import Services
from proxy.settings import GatewayConfig
from proxy.stages import TimedUpstream
from proxy.upstream import LiteLLMUpstream
from vilmo.instruct.principles import PrincipleBank

__all__ = ["ADMIN", "serve_fake_gateway"]


@contextmanager
def serve_fake_gateway(policy_dir: Path, store: dict[str, Any], stub_url: str | None = None,
                       auth: dict[str, Any] | None = None, server: dict[str, Any] | None = None,
                       ) -> Iterator[tuple[str, Services]]:
    """The gateway's root URL (no /v1) and its services; ``server`` adds to its server
    settings."""
    params = {"model": "openai/stub-model", "api_key": "sk-upstream-secret-abcdef123456",
              **({"api_base": f"{stub_url}/v1"} if stub_url else {})}
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": params}],
        "router_settings": {"num_retries": 0, "timeout": 5},
        "policy_dir": str(policy_dir), "default_policy": "default",
        "auth": {"admin_key": ADMIN, **(auth or {})}, "store": store,
        "server": {"policy_reload_interval_s": 0, **(server or {})}})
    services = fake_services(policy_dir, PrincipleBank.load())
    services.config = config
    services.upstream = TimedUpstream(
        LiteLLMUpstream(config.model_list, config.router_settings, Redactor(config.secrets()))
        if stub_url else FakeUpstream())
    with ServerThread(create_app(config, lambda _: services)) as served:
        yield served.url, services
