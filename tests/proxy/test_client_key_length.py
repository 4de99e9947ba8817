"""A config client key (``auth.keys[].key``) needs 16 characters, as the admin and metrics keys
do. It needed one: a gateway configured with the client key ``q7`` served it, and the key was
found by guessing over ``/v1/models`` in 2.4 s (1,296 tries, none throttled). A key written in
the file is measured when the file is read; an ``os.environ/NAME`` reference once resolved."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy.key_config import KeyBinding
from proxy.settings import ConfigError, GatewayConfig, load_config

MODEL_LIST = """model_list:
  - model_name: stub
    litellm_params: {model: openai/stub-model, api_key: sk-upstream}
"""


@pytest.mark.parametrize("key", ["q7", "", "fifteen-chars-k"])
def test_a_short_client_key_in_the_file_is_refused(key: str, tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(MODEL_LIST + f"auth:\n  keys:\n    - {{key: '{key}', name: team}}\n")
    with pytest.raises(ConfigError, match=r"auth\.keys\.0\.key: .*at least 16 characters"):
        load_config(path)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        KeyBinding(key=key, name="team")


def test_a_client_key_from_the_environment_is_measured_once_resolved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(MODEL_LIST + "auth:\n  keys:\n    - {key: sk-a-long-enough-key-0123, "
                    "name: a}\n    - {key: os.environ/TEAM_KEY, name: team}\n")
    monkeypatch.setenv("TEAM_KEY", "k" * 16)  # a short variable name holding a long key
    assert [k.key for k in load_config(path).auth.keys] == ["sk-a-long-enough-key-0123",
                                                           "k" * 16]
    monkeypatch.setenv("TEAM_KEY", "q7")
    with pytest.raises(ConfigError, match=r"auth\.keys\.1\.key: .*at least 16 characters"):
        load_config(path)
    monkeypatch.setenv("TEAM_KEY", "")
    with pytest.raises(ConfigError, match=r"auth\.keys\.1\.key: environment variable TEAM_KEY"):
        load_config(path)


def test_the_config_with_a_long_client_key_is_accepted() -> None:
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {"model": "openai/stub"}}],
        "auth": {"keys": [{"key": "sk-team-a-0123456789", "name": "team"}]}})
    assert config.auth.keys[0].key == "sk-team-a-0123456789"
