"""The ``store:`` config section: its contract names, defaults and secrets from the
environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy.store import StoreSettings
from proxy.store.config import DEFAULT_STATE_DIR


def test_defaults_are_the_embedded_store_in_the_xdg_state_folder() -> None:
    settings = StoreSettings()
    assert settings.url is None and settings.prefix == "vilmo"
    assert settings.state_path() == (Path.home() / ".local/state/vilmo/state.db")
    assert settings.spool_path() == DEFAULT_STATE_DIR.expanduser() / "spool"
    assert settings.limits_on_error == "fail_open" and settings.retention_s == 30 * 86400


def test_the_url_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VILMO_REDIS_URL", "redis://:s3cret@redis:6379/2")
    settings = StoreSettings.model_validate({"url": "os.environ/VILMO_REDIS_URL",
                                             "prefix": "prod"})
    assert settings.url == "redis://:s3cret@redis:6379/2"


@pytest.mark.parametrize(("fields", "message"), [
    ({"url": "os.environ/VILMO_TEST_UNSET_VARIABLE"}, "VILMO_TEST_UNSET_VARIABLE is not set"),
    ({"url": "http://redis:6379"}, "redis://"),
    ({"prefix": "has space"}, "pattern"),
    ({"limits_on_error": "maybe"}, "fail_open"),
    ({"audit_retention_days": 0}, "greater than 0"),
    ({"unknown": 1}, "Extra inputs"),
])
def test_bad_settings_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StoreSettings.model_validate(fields)
