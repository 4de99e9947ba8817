"""`vilmo serve` refuses, before any worker starts, a config that would crash every worker or
fail every request: exit 2 and one `config error: file:line: field: message` per problem, no
traceback, no secret quoted. A worker's start-up failing instead printed a traceback in each
worker and exited 3; a config that started but failed each request (a key's policy misspelt, an
upstream base without a scheme, an audit path that is a folder) was found by clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from proxy.cli import serve
from proxy.direct import route_of
from proxy.redaction import Redactor
from proxy.settings import CONFIG_ENV, ConfigError, default_config, load_config

BASE = """model_list:
  - model_name: stub
    litellm_params: {model: openai/stub, api_base: "http://127.0.0.1:9/v1", api_key: sk-up-0123}
"""
TENANT = "auth: {keys: [{key: sk-tenant-0123456789, name: tenant, policy: %s}]}\n"


@pytest.fixture
def run_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              ) -> Iterator[Callable[[str], tuple[Result, Path]]]:
    """`vilmo serve --config` on the text given; the server itself is replaced by a failure
    (a config that passes the check gets exit 1: 'the gateway started')."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setattr("proxy.cli._check_graphs", lambda: None)

    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the gateway started")

    monkeypatch.setattr("proxy.server.serve", started)

    def run(text: str) -> tuple[Result, Path]:
        path = tmp_path / "gateway.yaml"
        if "store:" not in text:  # the state in the test's folder, not the home folder
            text += f"store: {{path: {tmp_path / 'state' / 'state.db'}}}\n"
        path.write_text(text)
        return CliRunner().invoke(serve, ["--config", str(path)]), path

    yield run


def refused(result: Result, path: Path, line: int, field: str) -> str:
    """The config error for ``field`` at ``line``, after checking the exit was a refusal."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    prefix = f"config error: {path}:{line}: {field}: "
    assert prefix in result.output, result.output
    return result.output.split(prefix, 1)[1].splitlines()[0]


def test_a_config_that_passes_the_checks_reaches_the_server(
        run_serve: Callable[[str], tuple[Result, Path]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VILMO_TEST_HEADER", "tok-header-0123456789")
    text = BASE.replace("api_key: ", "extra_headers: {X-Up: os.environ/VILMO_TEST_HEADER}, "
                                     "api_key: ")
    text += TENANT % "strict-care-fairness"
    text += f"audit: {{path: {tmp_path / 'logs' / 'audit.jsonl'}}}\n"
    text += "router_settings: {num_retries: '2', timeout: 30}\nserver: {keep_alive_s: 75}\n"
    result, _ = run_serve(text)
    assert isinstance(result.exception, AssertionError), result.output  # 'the gateway started'
    assert (tmp_path / "logs" / "audit.jsonl").is_file()  # made as the audit sink makes it


@pytest.mark.parametrize(("extra", "line", "field", "says"), [
    ("policy_dir: /nonexistent/policies\n", 4, "policy_dir", "not a folder of policy files"),
    ("default_policy: nope\n", 4, "default_policy", "default policy 'nope' is not among"),
    (TENANT % "strict-care-fairnes", 4, "auth.keys.0.policy",
     "unknown policy 'strict-care-fairnes'"),
    ("router_settings: {num_retries: banana}\n", 4, "router_settings.num_retries",
     "valid integer"),
    ("router_settings: {num_retry: 2}\n", 4, "router_settings.num_retry",
     "(did you mean num_retries?)"),
    ("server: {request_read_timeout_s: .inf}\n", 4, "server.request_read_timeout_s",
     "finite number"),
    ("upstream: {connect_timeout_s: .inf}\n", 4, "upstream.connect_timeout_s", "finite number"),
])
def test_a_config_no_worker_could_serve_is_refused_by_field(
        run_serve: Callable[[str], tuple[Result, Path]], extra: str, line: int, field: str,
        says: str) -> None:
    result, path = run_serve(BASE + extra)
    assert says in refused(result, path, line, field)


def test_audit_and_store_paths_must_be_writable_files(
        run_serve: Callable[[str], tuple[Result, Path]], tmp_path: Path) -> None:
    """A folder as the audit path started, then every record's write failed; a path under a
    file crashed each worker's start-up (FileNotFoundError / NotADirectoryError)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result, path = run_serve(BASE + f"audit: {{path: {tmp_path}}}\n")
    assert "is a folder" in refused(result, path, 4, "audit.path")
    result, path = run_serve(BASE + f"audit: {{path: {a_file / 'audit.jsonl'}}}\n")
    assert "cannot write" in refused(result, path, 4, "audit.path")
    result, path = run_serve(BASE + f"store: {{path: {a_file / 'state.db'}}}\n")
    assert "cannot write" in refused(result, path, 4, "store.path")
    result, path = run_serve(BASE + f"store: {{path: {tmp_path}}}\n")
    assert "is a folder" in refused(result, path, 4, "store.path")


def test_a_malformed_store_url_is_refused_without_its_password(
        run_serve: Callable[[str], tuple[Result, Path]]) -> None:
    result, path = run_serve(BASE + "auth: {admin_key: 0123456789abcdef0123}\n"
                                    "store: {url: 'redis://:S3cretPassw0rd@[::1:6379/0'}\n")
    assert "not a valid Redis URL" in refused(result, path, 5, "store.url")
    assert "S3cretPassw0rd" not in result.output


def test_nested_environment_references_are_resolved(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``extra_headers: {X-Upstream-Token: os.environ/NAME}`` sent the text 'os.environ/NAME'
    upstream as the header's value; a router setting's reference was not read either."""
    monkeypatch.setenv("VILMO_TEST_TOKEN", "tok-real-secret-123456")
    monkeypatch.setenv("VILMO_TEST_PROJECT", "project-from-env-42")
    monkeypatch.setenv("VILMO_TEST_REDIS_PW", "redis-pw-from-env-7")
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE.replace("api_key: ", "extra_headers: {X-Upstream-Token: os.environ/"
                                              "VILMO_TEST_TOKEN}, api_key: ")
                    + "router_settings: {redis_password: os.environ/VILMO_TEST_REDIS_PW, "
                      "fallbacks: [{stub: [os.environ/VILMO_TEST_PROJECT]}]}\n")
    config = load_config(path)
    route = route_of(config.model_list[0], config)
    assert route.headers["x-upstream-token"] == "tok-real-secret-123456"
    assert config.router_settings["redis_password"] == "redis-pw-from-env-7"
    assert config.router_settings["fallbacks"] == [{"stub": ["project-from-env-42"]}]
    secrets = config.secrets()
    for value in ("tok-real-secret-123456", "redis-pw-from-env-7"):
        assert value in secrets  # a credential read from the environment: redacted
    assert "project-from-env-42" not in secrets  # a model name, wherever it was read from


def test_only_credentials_read_from_the_environment_are_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``os.environ/`` value of 8+ characters was a secret: an ``api_base``, an Azure
    ``api_version``, a model name read so vanished from the audit trail and the logs."""
    monkeypatch.setenv("VILMO_TEST_BASE", "https://api.openai.com/v1")
    monkeypatch.setenv("VILMO_TEST_VERSION", "2024-02-15-preview")
    monkeypatch.setenv("VILMO_TEST_MODEL", "azure/gpt-4o-mini")
    monkeypatch.setenv("VILMO_TEST_KEY", "sk-realsecret-123456")
    monkeypatch.setenv("VILMO_TEST_USER_BASE", "https://svc:pa55-in-url@llm.example/v1")
    path = tmp_path / "gateway.yaml"
    path.write_text("""model_list:
  - model_name: a
    litellm_params: {model: openai/gpt-4o, api_base: os.environ/VILMO_TEST_BASE,
                     api_key: os.environ/VILMO_TEST_KEY}
  - model_name: b
    litellm_params: {model: os.environ/VILMO_TEST_MODEL, api_version: os.environ/VILMO_TEST_VERSION,
                     api_key: os.environ/VILMO_TEST_KEY, api_base: "https://x.openai.azure.com"}
  - model_name: c
    litellm_params: {model: openai/c, api_base: os.environ/VILMO_TEST_USER_BASE}
""")
    redact = Redactor(load_config(path).secrets())
    text = ("See https://api.openai.com/v1/models; the API version 2024-02-15-preview; we use "
            "azure/gpt-4o-mini. key sk-realsecret-123456, pa55-in-url")
    assert redact(text) == ("See https://api.openai.com/v1/models; the API version "
                            "2024-02-15-preview; we use azure/gpt-4o-mini. key [redacted], "
                            "[redacted]")


def test_an_unset_nested_reference_is_named_by_its_field(
        run_serve: Callable[[str], tuple[Result, Path]], monkeypatch: pytest.MonkeyPatch,
        ) -> None:
    monkeypatch.delenv("VILMO_TEST_UNSET", raising=False)
    result, path = run_serve(BASE.replace(
        "api_key: ", "extra_headers: {X-Upstream-Token: os.environ/VILMO_TEST_UNSET}, api_key: "))
    assert refused(result, path, 3, "model_list.0.litellm_params.extra_headers.X-Upstream-Token"
                   ) == "environment variable VILMO_TEST_UNSET is not set"


def test_non_finite_and_unbounded_numbers_are_refused(tmp_path: Path) -> None:
    """YAML's .inf passed every bound written as a minimum only (a read timeout of .inf lets a
    slow client hold a worker for ever)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + "server: {request_read_timeout_s: .inf, policy_reload_interval_s: "
                           ".inf, keep_alive_s: 100000}\nupstream: {timeout_s: .inf, "
                           "connect_timeout_s: .nan}\nstore: {timeout_s: .inf}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert {i.field for i in caught.value.issues} == {
        "server.request_read_timeout_s", "server.policy_reload_interval_s", "server.keep_alive_s",
        "upstream.timeout_s", "upstream.connect_timeout_s", "store.timeout_s"}
    path.write_text(BASE.replace("api_key: ", "timeout: .inf, api_key: ")
                    + "router_settings: {timeout: .nan}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert {i.field for i in caught.value.issues} == {
        "model_list.0.litellm_params.timeout", "router_settings.timeout"}


def test_an_upstream_base_without_a_scheme_is_refused(
        run_serve: Callable[[str], tuple[Result, Path]], monkeypatch: pytest.MonkeyPatch,
        ) -> None:
    """``VILMO_UPSTREAM_BASE=localhost:8000/v1`` started, then every request got 502
    (httpx: UnsupportedProtocol)."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VILMO_UPSTREAM_BASE", "localhost:8000/v1")
    with pytest.raises(ConfigError) as caught:
        default_config()
    assert [i.field for i in caught.value.issues] == ["VILMO_UPSTREAM_BASE"]
    result = CliRunner().invoke(serve, [])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "config error: environment: VILMO_UPSTREAM_BASE: must be an http:// or https://" \
        in result.output
    monkeypatch.setenv("VILMO_TEST_BASE", "secret-host.internal:8000/v1")
    result, path = run_serve(BASE.replace('"http://127.0.0.1:9/v1"', "os.environ/VILMO_TEST_BASE"))
    assert "must be an http:// or https:// URL" in refused(
        result, path, 3, "model_list.0.litellm_params.api_base")
    assert "secret-host" not in result.output


@pytest.mark.slow
def test_the_router_settings_allowed_are_litellms() -> None:
    """The names ``router_settings`` may give are the installed Router's keyword arguments
    (an unknown one is a TypeError in every worker's start-up; 21 valid ones, such as
    ``ignore_invalid_deployments``, were refused), but the ``model_list`` the gateway gives."""
    import inspect

    from litellm.router import Router

    from proxy.config_values import ROUTER_SETTINGS

    assert ROUTER_SETTINGS == set(inspect.signature(Router.__init__).parameters) - {
        "self", "model_list"}


def test_router_settings_litellm_takes_are_accepted() -> None:
    """A YAML number as the Redis password (``redis_password: 12345678``) was refused."""
    from proxy.config_values import checked_router_settings

    settings, issues = checked_router_settings({
        "ignore_invalid_deployments": True, "tag_filtering_match_any": True,
        "enable_health_check_routing": True, "fallback_on_unsupported_params": True,
        "redis_password": 12345678, "num_retries": "2"})
    assert issues == []
    assert settings["redis_password"] == "12345678" and settings["num_retries"] == 2
    assert settings["ignore_invalid_deployments"] is True
    _, issues = checked_router_settings({"redis_password": True, "model_list": []})
    assert {name for name, _ in issues} == {"redis_password", "model_list"}
