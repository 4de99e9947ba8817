"""Shared fixtures: the stub upstream and the gateway, both real HTTP servers on loopback.

Two tiers: a test that loads a real model (the encoder, the stakes model, the value
classifier, a served gateway, which loads them all) is marked ``slow``, by a module-level
``pytestmark`` or by depending on the ``real_models`` fixture (every fixture that serves the
real gateway does); ``make test-fast`` runs the others (``pytest -m "not slow"``): the gateway
in process with fakes behind its seams (``fakes.py``), the store, the library's pure parts.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).parent))

from fakes import KeywordClassifier
from stub_upstream import ServerThread, StubUpstream

from vilmo.instruct.principles import PrincipleBank
from vilmo.judge.value_model import default_model_dir
from vilmo.policy_store import SHIPPED_POLICY_DIR

REPO = Path(__file__).resolve().parent.parent
TEAM_KEY = "sk-team-a-0123456789"
ADMIN_KEY = "sk-admin-0123456789"
METRICS_KEY = "sk-metrics-0123456789abcdef"
"""Opens /metrics (``auth.metrics_key``) and nothing else."""
UPSTREAM_SECRET = "sk-upstream-secret-abcdef123456"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses ``real_models`` (directly or through a fixture) is ``slow``."""
    for item in items:
        if "real_models" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_models() -> None:
    """Marks its users ``slow``: they load real models (see ``pytest_collection_modifyitems``)."""


UPSTREAM_PATHS = ["router", "direct"]
"""The gateway's two ways to an OpenAI-compatible upstream: LiteLLM's Router
(``upstream.direct: never``) and the direct path (``auto``, which takes it for every stub model)."""
BOTH_PATHS = pytest.mark.both_paths
"""A module's ``pytestmark``: its tests that serve a gateway run over both paths."""
NEEDS_WEIGHTS = pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").exists(),
                                   reason="no trained weights in vilmo/models/value_classifier")
"""Skips a test (or, as ``pytestmark``, a module) where the classifier's weights are missing."""
REAL_CLASSIFIER = [pytest.mark.slow, NEEDS_WEIGHTS]
"""A module's ``pytestmark``: its tests load the value classifier (a real model)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_paths: run over both upstream paths "
                                       "(UPSTREAM_PATHS) where a gateway is served")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``both_paths`` tests that use a gateway (``upstream_path``) run once per path."""
    if (metafunc.definition.get_closest_marker("both_paths")
            and "upstream_path" in metafunc.fixturenames):
        metafunc.parametrize("upstream_path", UPSTREAM_PATHS, indirect=True)


@pytest.fixture(scope="session")
def upstream_path(request: pytest.FixtureRequest) -> str:
    """The path the gateway fixtures take to the stub: ``direct`` unless parametrized."""
    return str(getattr(request, "param", "direct"))


@pytest.fixture(scope="session")
def stub() -> Iterator[StubUpstream]:
    upstream = StubUpstream()
    with ServerThread(upstream.app()) as server:
        upstream.url = server.url
        yield upstream


@pytest.fixture(autouse=True)
def _fresh_stub(request: pytest.FixtureRequest) -> None:
    if "stub" in request.fixturenames:
        request.getfixturevalue("stub").reset()


@pytest.fixture(scope="session")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("policies")
    for path in (SHIPPED_POLICY_DIR).glob("*.yaml"):
        shutil.copy(path, target / path.name)
    (target / "prefix.yaml").write_text(
        "name: prefix\nvalues:\n  mft.care: {weight: 1.0}\n"
        "instructions: {placement: user_prefix, max_principles: 2}\n")
    (target / "learned.yaml").write_text(
        "name: learned\nvalues:\n  mft.care: {}\n  safety.privacy: {}\n  mft.fairness: {}\n"
        "instructions: {generator: vilmo, max_principles: 2}\n")
    (target / "missing-weights.yaml").write_text(
        "name: missing-weights\nvalues:\n  mft.care: {}\n"
        "instructions: {generator: vilmo, weights: runs/nowhere/scorer.npz}\n")
    for name, text in GUARD_POLICIES.items():
        (target / f"{name}.yaml").write_text(f"name: {name}\n{text}")
    return target


def guard_policy(action: str, mode: str = "buffer", *, on_error: str = "closed",
                 block_with: str = "reply", input_check: bool = False,
                 max_chars: int | None = None, stream_timeout_s: float | None = None) -> str:
    limit = f", max_chars: {max_chars}" if max_chars else ""
    deadline = f", stream_timeout_s: {stream_timeout_s}" if stream_timeout_s else ""
    return (f"values:\n  mft.care: {{action: {action}}}\n  mft.fairness: {{action: annotate}}\n"
            f"checks: {{input: {str(input_check).lower()}, timeout_s: 2.0{limit}}}\n"
            f"on_error: {on_error}\nblock_with: {block_with}\nmax_regenerations: 2\n"
            f"streaming: {{mode: {mode}, window_tokens: 6, context_tokens: 3{deadline}}}\n"
            "refusal: REFUSED-BY-POLICY\n")


GUARD_POLICIES = {
    **{f"g-{action}-{mode}": guard_policy(action, mode)
       for action in ("allow", "annotate", "block", "regenerate")
       for mode in ("buffer", "chunked", "monitor")},
    "g-block-error": guard_policy("block", block_with="error"),
    "g-input": guard_policy("block", input_check=True),
    "g-input-error": guard_policy("block", input_check=True, block_with="error"),
    "g-input-annotate": guard_policy("annotate", input_check=True),
    **{f"g-{on_error}-{mode}": guard_policy("block", mode, on_error=on_error)
       for on_error in ("open", "closed") for mode in ("buffer", "chunked", "monitor")},
    **{f"g-small-{on_error}": guard_policy("block", on_error=on_error, max_chars=300)
       for on_error in ("open", "closed")},
    "g-small-input-open": guard_policy("annotate", on_error="open", input_check=True,
                                       max_chars=300),
    **{f"g-deadline-{mode}": guard_policy("block", mode, stream_timeout_s=1.0)
       for mode in ("buffer", "chunked", "monitor")},
    **{f"g-leave-{mode}": guard_policy("block", mode) for mode in ("buffer", "chunked")},
}


def gateway_config_dict(stub_url: str, policy_dir: Path, upstream_path: str = "direct",
                        ) -> dict[str, Any]:
    params = {"api_base": f"{stub_url}/v1", "api_key": UPSTREAM_SECRET}
    return {
        "model_list": [
            {"model_name": "stub", "litellm_params": {"model": "openai/stub-model", **params}},
            {"model_name": "stub-*", "litellm_params": {"model": "openai/stub-*", **params}},
        ],
        "router_settings": {"num_retries": 0, "timeout": 1.5},
        "upstream": {"direct": "never" if upstream_path == "router" else "auto"},
        "policy_dir": str(policy_dir),
        "default_policy": "default",
        "auth": {"keys": [
            {"key": TEAM_KEY, "name": "team-a", "policy": "strict-care-fairness"},
            {"key": ADMIN_KEY, "name": "admin", "allow_policy_header": True,
             "policies": ["*"]},
        ], "metrics_key": METRICS_KEY},
        "server": {"max_body_bytes": 200_000, "policy_reload_interval_s": 0},
        "audit": {"path": str(policy_dir.parent / "audit.jsonl")},
        "store": {"path": str(policy_dir.parent / "state" / "state.db")},
    }


@contextmanager
def keyless_gateway(stub_url: str, policy_dir: Path) -> Iterator[str]:
    """The gateway with all its real services (the real models) over the stub and no keys, so
    that each request names its policy by header; its /v1 URL while it is served."""
    from proxy.app import create_app
    from proxy.settings import GatewayConfig

    config = GatewayConfig.model_validate(gateway_config_dict(stub_url, policy_dir))
    config.auth.keys = []
    with ServerThread(create_app(config)) as server:
        yield f"{server.url}/v1"


@pytest.fixture(scope="session")
def classifier() -> KeywordClassifier:
    return KeywordClassifier()


@pytest.fixture(scope="session")
def gateway(stub: StubUpstream, policy_dir: Path, classifier: KeywordClassifier,
            upstream_path: str, real_models: None) -> Iterator[str]:
    """The gateway's base URL (…/v1), served by uvicorn with the real services except the
    value classifier, a keyword fake (the enforcement logic is what these tests exercise),
    on the ``upstream_path`` to the stub."""
    from proxy.app import create_app
    from proxy.services import build_services
    from proxy.settings import GatewayConfig

    config = GatewayConfig.model_validate(
        gateway_config_dict(stub.url, policy_dir, upstream_path))
    app = create_app(config, lambda c: build_services(c, lambda policy: classifier))
    with ServerThread(app) as server:
        yield f"{server.url}/v1"


@pytest.fixture(scope="session")
def bank() -> PrincipleBank:
    return PrincipleBank.load()
