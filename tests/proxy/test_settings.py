"""The gateway config file, embedded defaults, and `vilmo serve`'s start-up errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy.cli import serve
from proxy.settings import (
    ConfigError,
    GatewayConfig,
    default_config,
    load_config,
    resolve_environment,
)
from vilmo.policy_store import SHIPPED_POLICY_DIR

MODEL_LIST = """model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/VILMO_TEST_KEY}
"""


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(MODEL_LIST + "polcy_dir: ./policies\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    issue = caught.value.issues[0]
    assert (issue.field, issue.line) == ("polcy_dir", 4)
    assert "Extra inputs are not permitted" in issue.message


def test_environment_secrets_resolve_or_fail_by_field(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(MODEL_LIST + "policy_dir: pol\n")
    monkeypatch.delenv("VILMO_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"model_list\.0\.litellm_params\.api_key: "
                                          r"environment variable VILMO_TEST_KEY is not set"):
        load_config(path)
    monkeypatch.setenv("VILMO_TEST_KEY", "sk-from-env-123456")
    config = load_config(path)
    assert config.model_list[0].litellm_params["api_key"] == "sk-from-env-123456"
    assert config.policy_dir == tmp_path / "pol"  # relative to the config file
    assert "sk-from-env-123456" in config.secrets()


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "VILMO_UPSTREAM_BASE"):
        monkeypatch.delenv(name, raising=False)
    assert default_config() is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123456")
    config = default_config()
    assert config is not None
    assert config.policy_dir == SHIPPED_POLICY_DIR and config.default_policy == "default"
    assert config.model_list[0].model_name == "*"
    assert not config.auth.keys  # local use: no client key required


def test_serve_without_upstream_says_how_to_add_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "VILMO_UPSTREAM_BASE"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(serve, [])
    assert result.exit_code == 2
    assert "OPENAI_API_KEY" in result.output and "--config" in result.output


def test_serve_reports_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("model_list: []\n")
    result = CliRunner().invoke(serve, ["--config", str(path)])
    assert result.exit_code == 2
    assert f"config error: {path}:1: model_list" in result.output


def test_secrets_include_nested_header_values_and_credentials() -> None:
    from proxy.settings import GatewayConfig

    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "m", "allowed_params": ["top_k"], "litellm_params": {
            "model": "openai/m", "api_key": "sk-top-level-123",
            "extra_headers": {"Authorization": "Bearer tok-in-header-456", "X-Org": "org-7"}}}],
        "router_settings": {"redis_password": "pw-789"},
    })
    secrets = config.secrets()
    for secret in ("sk-top-level-123", "Bearer tok-in-header-456", "tok-in-header-456",
                   "org-7", "pw-789"):
        assert secret in secrets
    assert config.allowed_params("m") == {"top_k"} and config.allowed_params("x") == set()
    assert "allowed_params" not in config.model_list[0].router_entry()


def test_a_yaml_syntax_error_does_not_quote_the_secret_on_its_line(tmp_path: Path) -> None:
    """PyYAML's message quotes the lines around the error, which went to stderr (and the
    container's log) at start-up: here the upstream's api_key."""
    secret = "sk-upstream-secret-0123456789"
    path = tmp_path / "gateway.yaml"
    path.write_text("model_list:\n  - model_name: stub\n    litellm_params:\n"
                    f"      model: openai/stub\n      api_key: {secret}: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [issue] = caught.value.issues
    assert issue.line == 5 and "invalid YAML: mapping values are not allowed" in issue.message
    assert "column" in issue.message and secret not in str(caught.value)
    result = CliRunner().invoke(serve, ["--config", str(path)])
    assert result.exit_code == 2 and secret not in result.output


def test_a_merge_key_with_an_override_loads(tmp_path: Path) -> None:
    """``<<: *common`` then ``timeout: 10`` is standard YAML (the mapping's own key wins over
    the merged one), not a duplicate key; a key written twice in the entry still is."""
    entry = ("model_list:\n  - model_name: slow\n    litellm_params: &common\n"
             "      model: openai/stub\n      timeout: 30\n"
             "  - model_name: fast\n    litellm_params:\n      <<: *common\n"
             "      timeout: 10\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(entry)
    fast = load_config(path).model_list[1].litellm_params
    assert fast == {"model": "openai/stub", "timeout": 10}
    path.write_text(entry + "      timeout: 20\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [(i.line, i.field) for i in caught.value.issues] == [
        (10, "model_list.1.litellm_params.timeout")]


def test_credentials_inside_an_upstream_url_are_secrets() -> None:
    """An ``api_base`` with user-info or a key in its query string is redacted like an
    ``api_key``: upstream errors and logs may quote the URL."""
    from proxy.errors import Redactor
    from proxy.settings import GatewayConfig

    config = GatewayConfig.model_validate({"model_list": [
        {"model_name": "a", "litellm_params": {
            "model": "openai/a", "api_base": "https://svc:pass-in-url-1@llm.example/v1"}},
        {"model_name": "b", "litellm_params": {
            "model": "openai/b", "api_base": "https://tok-as-user-2@llm.example/v1"}},
        {"model_name": "c", "litellm_params": {
            "model": "azure/c", "api_base": "https://llm.example/v1?api-key=key-in-query-3&v=2"}},
    ]})
    redact = Redactor(config.secrets())
    text = redact("upstream said: cannot reach https://svc:pass-in-url-1@llm.example/v1, "
                  "https://tok-as-user-2@llm.example/v1, "
                  "https://llm.example/v1?api-key=key-in-query-3&v=2")
    for secret in ("pass-in-url-1", "tok-as-user-2", "key-in-query-3"):
        assert secret not in text
    assert "llm.example" in text and "v=2" in text  # the rest of the URL stays readable


@pytest.mark.parametrize("field", ["admin_key", "metrics_key"])
def test_a_key_from_the_environment_is_measured_once_resolved(
        field: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 16-character rule is the key's, not the ``os.environ/NAME`` reference's: a short
    variable name holding a long key is fine, a long name holding a short key is not, and a
    variable that is not set is named."""
    path = tmp_path / "gw.yaml"
    monkeypatch.setenv("VILMO_TEST_KEY", "sk-upstream")
    monkeypatch.setenv("ADM", "a-perfectly-long-key-0123456789")
    path.write_text(MODEL_LIST + f"auth: {{{field}: os.environ/ADM}}\n")
    assert getattr(load_config(path).auth, field) == "a-perfectly-long-key-0123456789"
    monkeypatch.setenv("A_RATHER_LONG_VARIABLE_NAME", "short")
    path.write_text(MODEL_LIST + f"auth: {{{field}: os.environ/A_RATHER_LONG_VARIABLE_NAME}}\n")
    with pytest.raises(ConfigError, match=rf"auth\.{field}: .*at least 16 characters"):
        load_config(path)
    path.write_text(MODEL_LIST + f"auth: {{{field}: os.environ/VILMO_NOT_SET_ANYWHERE}}\n")
    with pytest.raises(ConfigError, match=rf"auth\.{field}: environment variable "
                                          "VILMO_NOT_SET_ANYWHERE is not set"):
        load_config(path)
    path.write_text(MODEL_LIST + f"auth: {{{field}: too-short-key}}\n")
    with pytest.raises(ConfigError, match=rf"auth\.{field}: .*at least 16 characters"):
        load_config(path)


def test_the_metrics_key_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VILMO_TEST_METRICS_KEY", "metrics-key-0123456789abcdef")
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
        "auth": {"metrics_key": "os.environ/VILMO_TEST_METRICS_KEY"}})
    resolved = resolve_environment(config, "test")
    assert "metrics-key-0123456789abcdef" in resolved.secrets()
