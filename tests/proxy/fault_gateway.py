"""A gateway served over HTTP whose upstream seam is real (a named upstream path to the stub
upstream) and whose models are fakes (``fakes.py``): for the fault and fuzz tests, which
exercise the upstream path, the error mapping and the server, not the judge.

``UPSTREAM_PATHS`` names the paths the fault tests run over: ``litellm`` (LiteLLM's Router for
every model, ``upstream.direct: never``) and ``direct`` (``upstream.direct: auto``, as
``build_services`` builds it: the stub's models go the direct httpx path, while ``primary`` and
``backup``, which have fallbacks, stay on the Router by design).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fakes import FakeInstructions, KeywordClassifier, MemoryAudit
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.direct import build_upstream
from proxy.errors import Redactor
from proxy.guard import Guard
from proxy.metrics import Metrics
from proxy.services import Services
from proxy.settings import GatewayConfig
from proxy.stages import TimedUpstream
from proxy.upstream import LiteLLMUpstream, Upstream
from vilmo.instruct.principles import PrincipleBank
from vilmo.policy_store import PolicyStore

UPSTREAM_PATHS = ("litellm", "direct")
UPSTREAM_KEY = "sk-stub-upstream-0123456789"
"""The gateway's key for the stub (which echoes it in its errors, as providers partly do)."""
TIMEOUT_S = 1.5
"""The upstream timeout (router_settings.timeout) of the gateway under test."""


def fault_config(stub_url: str, policy_dir: Path, **extra: Any) -> GatewayConfig:
    """Any model name reaches the stub (``*``); ``primary`` always fails with 500 and falls
    back to ``backup``, which answers."""
    params = {"api_base": f"{stub_url}/v1", "api_key": UPSTREAM_KEY}
    return GatewayConfig.model_validate({
        "model_list": [
            {"model_name": "primary", "litellm_params": {"model": "openai/stub-status-500",
                                                         **params}},
            {"model_name": "backup", "litellm_params": {"model": "openai/stub-model", **params}},
            {"model_name": "*", "litellm_params": {"model": "openai/*", **params}},
        ],
        "router_settings": {"num_retries": 0, "timeout": TIMEOUT_S,
                            "fallbacks": [{"primary": ["backup"]}]},
        "policy_dir": str(policy_dir),
        "default_policy": "default",
        "server": {"policy_reload_interval_s": 0},
        "store": {"path": str(policy_dir.parent / "fault-state" / "state.db")},
        **extra,
    })


def upstream_for(path: str, config: GatewayConfig) -> Upstream:
    """The upstream seam as ``build_services`` makes it, for the named path."""
    if path == "litellm":
        return TimedUpstream(LiteLLMUpstream(config.model_list, config.router_settings,
                                             Redactor(config.secrets())))
    if path == "direct":
        config = config.model_copy(deep=True)
        config.upstream.direct = "auto"
        return TimedUpstream(build_upstream(config, Redactor(config.secrets())))
    raise ValueError(f"unknown upstream path {path!r}")


def fault_services(config: GatewayConfig, path: str) -> Services:
    metrics = Metrics([d.model_name for d in config.model_list])
    classifier = KeywordClassifier()
    return Services(policies=PolicyStore(config.policy_dir, config.default_policy, 0),
                    instructions=FakeInstructions(), bank=PrincipleBank.load(),
                    upstream=upstream_for(path, config),
                    guard=Guard(lambda policy: classifier, metrics), metrics=metrics,
                    audit=MemoryAudit(), config=config, redactor=Redactor(config.secrets()))


@contextmanager
def served(config: GatewayConfig, path: str) -> Iterator[tuple[str, Services]]:
    """The gateway's root URL and its services (``services.audit`` has every record)."""
    built: list[Services] = []

    def build(config: GatewayConfig) -> Services:
        built.append(fault_services(config, path))
        return built[0]

    with ServerThread(create_app(config, build)) as server:
        yield server.url, built[0]
