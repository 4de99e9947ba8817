"""docker-compose.yml, the Prometheus config and the Grafana dashboard, checked without Docker:
their structure and wiring, and that every metric a Grafana panel queries is in the gateway's
/metrics output after traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ADMIN_KEY, METRICS_KEY, REPO, TEAM_KEY
from store_gateway import admin, chat, serve_gateway, store_config

from proxy.settings import ConfigError, GatewayConfig, load_config

DEPLOY = REPO / "deploy"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def grafana_dashboard() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "grafana/dashboards/vilmo.json").read_text()))


def test_compose_wires_the_admin_key_redis_password_and_every_mounted_file() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "redis", "prometheus", "grafana"}
    gateway = services["gateway"]
    env = gateway["environment"]
    assert env["VILMO_ADMIN_KEY"].startswith("${VILMO_ADMIN_KEY:?")  # compose refuses without
    assert env["VILMO_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert env["VILMO_REDIS_URL"].endswith("@redis:6379/0")
    assert gateway["command"] == ["--config", "/config/gateway.yaml"]
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in command and "--appendonly yes" in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "ports" not in redis  # only the gateway reaches it
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the AOF on a volume
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    scrape = services["prometheus"]["configs"][0]
    assert compose()["configs"][scrape["source"]]["content"].startswith("${VILMO_METRICS_KEY:?")
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["gateway:4000"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == scrape["target"]


def test_compose_publishes_prometheus_and_grafana_on_loopback_only_with_a_password() -> None:
    """The metrics name every tenant's key and its usage: Prometheus (no authentication) and
    Grafana are not published beyond this host, and Grafana has no default password."""
    services = compose()["services"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_the_compose_gateway_config_needs_its_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"VILMO_ADMIN_KEY": "a" * 32, "VILMO_METRICS_KEY": "m" * 32, "OPENAI_API_KEY": "x",
           "VILMO_REDIS_URL": "redis://:s3cret-password@redis:6379/0",
           "VILMO_UPSTREAM_BASE": "http://upstream/v1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_config(DEPLOY / "gateway.yaml")
    assert config.auth.admin_key == "a" * 32 and config.auth.require_admin_key
    assert config.store.url == env["VILMO_REDIS_URL"]
    assert {"a" * 32, "s3cret-password", env["VILMO_REDIS_URL"]} <= set(config.secrets())
    assert config.auth.metrics_key == "m" * 32 and "m" * 32 in config.secrets()
    assert config.auth.keys == []  # Prometheus' key is the metrics key, no client key
    monkeypatch.delenv("VILMO_ADMIN_KEY")
    with pytest.raises(ConfigError, match="VILMO_ADMIN_KEY"):
        load_config(DEPLOY / "gateway.yaml")


@pytest.mark.parametrize("extra", [{"store": {"url": "redis://127.0.0.1:6379/0"}},
                                   {"auth": {"require_admin_key": True}}])
def test_a_gateway_on_redis_or_told_to_require_it_refuses_to_start_without_an_admin_key(
        extra: dict[str, Any]) -> None:
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}],
              **extra}
    with pytest.raises(ValueError, match="auth.admin_key is required"):
        GatewayConfig.model_validate(config)


def test_grafana_uses_the_provisioned_datasource_and_a_dashboard_folder_it_mounts() -> None:
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
                                .read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/vilmo.yml")
                              .read_text())["providers"][0]
    grafana = compose()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    dashboard = grafana_dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 12
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == datasource["uid"]
            assert target["expr"].count("(") == target["expr"].count(")")


BUILT_IN_PANELS = {"timeseries", "bargauge", "barchart", "stat", "gauge", "table", "xychart",
                   "piechart", "text", "row"}


def test_the_grafana_dashboard_needs_no_plugin() -> None:
    """Every panel is one Grafana ships (no radar plugin: the README says why), and compose
    installs none, so Grafana starts without network."""
    assert {p["type"] for p in grafana_dashboard()["panels"]} <= BUILT_IN_PANELS
    environment = compose()["services"]["grafana"].get("environment") or {}
    names = environment if isinstance(environment, list) else list(environment)
    assert not any("GF_INSTALL_PLUGINS" in str(name) for name in names)


def queried_metrics() -> set[str]:
    found = set()
    for panel in grafana_dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.update(re.findall(r"\bvilmo_[a-z_]+", target["expr"]))
    return found


@pytest.mark.slow
def test_every_metric_the_grafana_dashboard_queries_is_served_after_traffic(
        stub: Any, policy_dir: Path, classifier: Any, tmp_path: Path) -> None:
    store = {"path": str(tmp_path / "state.db"), "spool_dir": str(tmp_path / "spool")}
    with serve_gateway(store_config(stub.url, policy_dir, store), classifier) as base:
        limited = admin("POST", f"{base}/admin/keys", json={"name": "bot", "rpm": 1}).json()
        chat(base, limited["key"])
        chat(base, limited["key"])  # 429
        stub.reply = "You could punch him."
        chat(base, ADMIN_KEY, **{"x-vilmo-policy": "g-regenerate-buffer"})
        chat(base, TEAM_KEY, "How do I get back at my brother?")  # blocked, instruction
        chat(base, TEAM_KEY, "How do I get back at my brother?")  # the cached instruction
        stub.reply = "CLASSIFIER-CRASH"
        chat(base, ADMIN_KEY, **{"x-vilmo-policy": "g-open-buffer"})
        text = httpx.get(f"{base}/metrics",
                         headers={"authorization": f"Bearer {METRICS_KEY}"}).text
    samples = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    queried = queried_metrics()
    assert len(queried) >= 12
    missing = sorted(name for name in queried if name not in samples)
    assert not missing, f"queried by Grafana, no sample in /metrics: {missing}"


# --- the image's user: not root, owning every path the gateway writes -----------------------
GATEWAY_UID = "10001"
COMPOSE_ENV = {"VILMO_ADMIN_KEY": "a" * 32, "VILMO_METRICS_KEY": "m" * 32,
               "OPENAI_API_KEY": "x", "VILMO_REDIS_URL": "redis://:pw@redis:6379/0",
               "VILMO_UPSTREAM_BASE": "http://upstream/v1"}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


class ImageFiles:
    """Who owns what in the image, as its Dockerfile builds it: root, unless a ``chown`` or a
    ``useradd --create-home`` gave a path to another user; ``/tmp`` is everyone's."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.owners: dict[Path, str] = {Path("/"): "0", Path("/tmp"): "*"}
        self.home = Path("/root")
        self.user = "0"
        for instruction, arguments in dockerfile_instructions():
            if instruction == "ENV":
                self.env.update(re.findall(r"(\w+)=(\S+)", arguments))
            elif instruction == "USER":
                self.user = arguments.split(":")[0]
            elif instruction == "RUN":
                for command in re.split(r"&&|;", arguments):
                    self._run(command.split())

    def _run(self, words: list[str]) -> None:
        if words[:1] == ["mkdir"]:
            for path in (w for w in words[1:] if w.startswith("/")):
                self.owners.setdefault(Path(path), self.owner(Path(path)))
        elif words[:1] == ["useradd"] and "--create-home" in words:
            self.home = Path(words[words.index("--home-dir") + 1])
            self.owners[self.home] = words[words.index("--uid") + 1]
        elif words[:1] == ["chown"]:
            user = words[2 if words[1] == "-R" else 1].split(":")[0]
            for path in (w for w in words[2:] if w.startswith("/")):
                self.owners[Path(path)] = user

    def owner(self, path: Path) -> str:
        """The owner of the nearest folder that exists, where a write would go."""
        while path not in self.owners:
            path = path.parent
        return self.owners[path]


def written_paths(files: ImageFiles, environment: dict[str, str]) -> dict[str, Path]:
    """Every path the compose gateway writes: the store's SQLite file and spool, the audit
    file (if any), and the graph cache (a missing graph is built there)."""
    config = load_config(DEPLOY / "gateway.yaml")
    cache = Path(environment.get("VILMO_CACHE_DIR") or files.env["VILMO_CACHE_DIR"])
    home = str(files.home)
    paths = {"store.path": Path(str(config.store.path).replace("~", home, 1)),
             "store.spool_dir": Path(str(config.store.spool_path()).replace("~", home, 1)),
             "graph cache": cache / "onnx" / "graph.onnx"}
    if config.audit.path is not None:
        paths["audit.path"] = config.audit.path
    return paths


def test_the_image_and_compose_run_the_gateway_as_a_user_of_its_own() -> None:
    """The gateway holds the upstream key and every client key: it runs as uid 10001, not
    root, and compose stops it from gaining privileges (setuid binaries)."""
    files = ImageFiles()
    instructions = [name for name, _ in dockerfile_instructions()]
    assert files.user == GATEWAY_UID
    assert instructions.index("USER") > max(i for i, n in enumerate(instructions) if n == "RUN")
    gateway = compose()["services"]["gateway"]
    assert str(gateway.get("user", "")).split(":")[0] == GATEWAY_UID
    assert "no-new-privileges:true" in gateway.get("security_opt", [])


def test_every_path_the_compose_gateway_writes_is_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated from the Dockerfile and compose (no Docker here): a named volume Docker
    creates takes the owner of the image's folder it is mounted on (a missing one: root); a
    bind mount is read-only."""
    for name, value in COMPOSE_ENV.items():
        monkeypatch.setenv(name, value)
    files = ImageFiles()
    gateway = compose()["services"]["gateway"]
    for volume in gateway["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], volume
        else:
            files.owners.setdefault(Path(target), "0")  # a mount point Docker makes
    environment = gateway.get("environment") or {}
    for name, path in written_paths(files, environment).items():
        assert files.owner(path.parent) in (GATEWAY_UID, "*"), (
            f"{name}: {path} is not the gateway user's to write")


def test_compose_serves_the_graphs_the_image_built() -> None:
    """`vilmo warmup` builds the graphs into the image's cache at build time; compose used to
    point VILMO_CACHE_DIR at an empty volume, and every fresh volume rebuilt them on start."""
    gateway = compose()["services"]["gateway"]
    cache = (gateway.get("environment") or {}).get("VILMO_CACHE_DIR")
    built = ImageFiles().env["VILMO_CACHE_DIR"]
    assert cache in (None, built)
    assert "vilmo warmup" in (REPO / "Dockerfile").read_text()
