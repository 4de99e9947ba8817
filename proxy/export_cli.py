"""`vilmo export negatives`: flagged replies from the audit trail as D2O or DPO samples.

Registered into the `vilmo` command line through the ``vilmo.commands`` entry point, like
``serve``. It reads the store the gateway config names (Redis or the embedded SQLite file), so
it works on either backend, on the gateway's host or anywhere that reaches its Redis.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import click

from proxy.settings import CONFIG_ENV, ConfigError, load_config
from proxy.store import AuditQuery, StoreError, StoreSettings, open_store
from proxy.store.negatives import LeftOut, NegativeFormat, negative_samples, write_jsonl
from proxy.summary import parse_instant


@click.group("export")
def export() -> None:
    """Export data from the gateway's state (see `vilmo export negatives --help`)."""


@export.command("negatives")
@click.option("--format", "fmt", type=click.Choice(["d2o", "dpo"]), required=True,
              help="d2o: every violating reply (prompt, rejected, violated values, the "
                   "regenerated reply where one passed); dpo: prompt, chosen, rejected (only "
                   "where a regenerated reply passed).")
@click.option("--since", default=None, help="Only requests at or after this time: Unix "
              "seconds or ISO 8601 (2026-11-30T09:00:00Z).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help=f"Gateway YAML whose `store:` is read "
              f"(default: ${CONFIG_ENV}, else the embedded store's default path).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write here instead of stdout.")
@click.option("--include-truncated", is_flag=True, default=False,
              help="Also write samples with a text the audit trail cut (a reply cut short, a "
                   "prompt missing its first turns), each marked `truncated: true`; by default "
                   "they are left out and counted.")
def negatives(fmt: NegativeFormat, since: str | None, config_path: Path | None,
              out_path: Path | None, include_truncated: bool) -> None:
    """Write flagged replies from the audit trail as JSON Lines training samples."""
    settings = _store_settings(config_path)
    start = _time(since)
    out = None if out_path is None else _private_output(out_path)
    store = open_store(settings)
    left_out = LeftOut()
    try:
        samples = negative_samples(store.export_audit(AuditQuery(since=start)), fmt, start,
                                   include_truncated, left_out)
        count = write_jsonl(samples, out or sys.stdout)
    except StoreError as error:
        click.echo(f"store error: {error}", err=True)
        raise SystemExit(1) from None
    finally:
        store.close()
        if out is not None:
            out.close()
    click.echo(f"{count} {fmt} samples", err=True)
    if left_out.unpaired:
        click.echo(f"{left_out.unpaired} replies of several choices left out: recorded "
                   "without each choice's text (before the trail kept them)", err=True)
    if left_out.truncated:
        click.echo(f"{left_out.truncated} samples left out: the audit trail cut a text in them "
                   "(--include-truncated writes them, marked)", err=True)


def _private_output(path: Path) -> TextIO:
    """``--out``, readable by this user only when it is created here, as the store it copies
    is (``proxy.store.spool.private_file``): the samples are tenants' prompts and replies."""
    try:
        return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                    encoding="utf-8")
    except OSError as error:
        raise click.BadParameter(f"cannot write {path}: {error.strerror}",
                                 param_hint="--out") from None


def _store_settings(config_path: Path | None) -> StoreSettings:
    path = config_path or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None:
        return StoreSettings()
    try:
        return load_config(path).store
    except ConfigError as exc:
        for issue in exc.issues:
            click.echo(f"config error: {issue}", err=True)
        raise SystemExit(2) from None


def _time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        raise click.BadParameter("Unix seconds or ISO 8601 expected", param_hint="--since") from None
