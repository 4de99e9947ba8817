"""`vilmo serve`: run the gateway under uvicorn. Registered into the `vilmo` command line
through the ``vilmo.commands`` entry point, so the library never imports the gateway."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import click

from proxy.settings import (
    CONFIG_ENV,
    NO_UPSTREAM_HELP,
    ConfigError,
    GatewayConfig,
    default_config,
    load_config,
)


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Gateway YAML (model_list, policy_dir, default_policy, ...).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=4000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes, each with its own models (see README, Performance).")
def serve(config_path: Path | None, host: str, port: int, workers: int) -> None:
    """Start the OpenAI-compatible gateway (embedded defaults without --config), on the
    server edge of ``proxy.server`` (its limits on slow, large and excess requests).

    The config is checked here, so errors show before any worker starts; each worker (one
    process per ``--workers``) then builds its own app from the same file through the factory
    ``proxy.app:app_from_environment``, which reads the path from ``VILMO_CONFIG``."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = _config(config_path)
    _check_graphs()
    if config_path is None:
        os.environ.pop(CONFIG_ENV, None)
    else:
        os.environ[CONFIG_ENV] = str(config_path.resolve())
    from proxy.server import ServerConfig
    from proxy.server import serve as run_server
    from proxy.trusted_host import ANY_HOST, LOOPBACK_HOSTS, allowed_hosts

    click.echo(f"vilmo gateway on http://{host}:{port}/v1 (policies: {config.policy_dir}, "
               f"default policy: {config.default_policy}, workers: {workers})")
    if host not in LOOPBACK_HOSTS and ANY_HOST not in allowed_hosts(config):
        click.echo("note: this gateway answers only to the Host names in "
                   f"server.allowed_hosts ({', '.join(allowed_hosts(config))}); add the names "
                   "clients use for it there, or they get 421 host_not_allowed", err=True)
    run_server(ServerConfig("proxy.app:app_from_environment", config.server, factory=True,
                            host=host, port=port, workers=workers, log_level="info"))


def _check_graphs() -> None:
    """Without torch the gateway can only read cached ONNX graphs: say so before any worker
    starts, and how to make them (``vilmo warmup``), rather than fail in every worker."""
    if torch_installed():
        return
    from vilmo.judge.graph_files import cache_dir
    from vilmo.judge.graphs import missing_graphs

    missing = missing_graphs()
    if missing:
        click.echo(f"error: {len(missing)} model graph(s) are not in the cache "
                   f"({cache_dir() / 'onnx'}) and torch, which builds them, is not installed: "
                   "run `vilmo warmup` where torch is installed, with the same "
                   "VILMO_CACHE_DIR", err=True)
        raise SystemExit(2)


def torch_installed() -> bool:
    """Whether torch can be imported (found, not imported: serving never loads it)."""
    return importlib.util.find_spec("torch") is not None


def _config(path: Path | None) -> GatewayConfig:
    """The config, checked as far as it can be without loading models (``proxy.start_checks``);
    exit 2 with one ``config error: file:line: field: message`` per problem."""
    from proxy.start_checks import located, start_up_issues

    try:
        config = default_config() if path is None else load_config(path)
        if config is None:
            click.echo(NO_UPSTREAM_HELP, err=True)
            raise SystemExit(2)
        issues = start_up_issues(config, "environment" if path is None else str(path))
        if issues:
            raise ConfigError(issues)
        return config
    except ConfigError as exc:
        for issue in exc.issues if path is None else located(exc.issues, path):
            click.echo(f"config error: {issue}", err=True)
        raise SystemExit(2) from None
