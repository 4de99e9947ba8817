"""What the ``Host`` allow-list (``proxy.trusted_host``) shows of itself: its 421 is in the
OpenAPI document of every route it guards, each refusal is counted in
``vilmo_edge_refusals_total{reason="host_not_allowed"}``, and ``vilmo serve --host 0.0.0.0``
on an anonymous gateway (served to loopback names only) says how to serve another name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fakes import fake_services
from stub_upstream import ServerThread

from proxy.app import create_app
from proxy.cli import serve
from proxy.settings import CONFIG_ENV, GatewayConfig
from vilmo.instruct.principles import PrincipleBank

MODELS = [{"model_name": "stub", "litellm_params": {"model": "openai/stub-model"}}]


@pytest.fixture(name="gateway", scope="module")
def gateway_fixture(policy_dir: Path, bank: PrincipleBank) -> Iterator[str]:
    """An anonymous gateway: loopback names only."""
    config = GatewayConfig.model_validate({
        "model_list": MODELS, "policy_dir": str(policy_dir), "default_policy": "default",
        "server": {"policy_reload_interval_s": 0}})
    services = fake_services(policy_dir, bank)
    services.config = config
    with ServerThread(create_app(config, lambda _: services)) as thread:
        yield thread.url


def host_refusals(url: str) -> float:
    prefix = 'vilmo_edge_refusals_total{reason="host_not_allowed"} '
    lines = [line for line in httpx.get(f"{url}/metrics").text.splitlines()
             if line.startswith(prefix)]
    assert lines, "no host_not_allowed series"
    return float(lines[0].removeprefix(prefix))


def test_host_refusals_are_counted(gateway: str) -> None:
    before = host_refusals(gateway)
    for _ in range(2):
        response = httpx.get(f"{gateway}/v1/models", headers={"host": "evil.example:4000"})
        assert response.status_code == 421
    assert host_refusals(gateway) == before + 2


def test_the_document_lists_the_421_where_it_can_happen(gateway: str) -> None:
    paths: dict[str, Any] = httpx.get(f"{gateway}/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for operation in operations.values():
            listed = "421" in operation["responses"]
            assert listed == (path != "/healthz"), path  # /healthz answers any Host
    chat = paths["/v1/chat/completions"]["post"]["responses"]["421"]
    assert chat["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


@pytest.mark.parametrize("auth, host, hinted", [
    ("", "0.0.0.0", True), ("", "127.0.0.1", False),
    ("auth: {admin_key: sk-admin-0123456789abcdef}\n", "0.0.0.0", False)])
def test_serve_on_every_address_of_an_anonymous_gateway_names_allowed_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: str, host: str,
        hinted: bool) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setattr("proxy.cli._check_graphs", lambda: None)
    monkeypatch.setattr("proxy.server.serve", lambda *args, **kwargs: None)
    path = tmp_path / "gateway.yaml"
    path.write_text("model_list: [{model_name: stub, litellm_params: {model: openai/stub}}]\n"
                    f"store: {{path: {tmp_path / 'state.db'}}}\n" + auth)
    result = CliRunner().invoke(serve, ["--config", str(path), "--host", host])
    assert result.exit_code == 0, result.output
    assert ("server.allowed_hosts" in result.output) == hinted, result.output
