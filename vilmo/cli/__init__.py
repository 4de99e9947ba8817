"""The `vilmo` command line: one group, one module per command group.

Commands of other packages (the gateway's `vilmo serve`) join through the ``vilmo.commands``
entry-point group, so this library never imports the gateway.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points

import click

from vilmo.cli.classifier import classify_command
from vilmo.cli.evaluate import eval_group
from vilmo.cli.policy import policy_group
from vilmo.cli.train import train_group
from vilmo.cli.values import values_command
from vilmo.cli.warmup import warmup_command


def _offline_environment() -> None:
    """Nothing this tool runs may reach the network for weights or price maps."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class _Group(click.Group):
    """The `vilmo` group: a data file that is missing or has a bad line ends the command with
    its one-line message (file and line), not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from vilmo.datasets.readers import DataError, DataMissing

        try:
            return super().invoke(ctx)
        except (DataError, DataMissing) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """vilmo: value-alignment gateway and tools for LLMs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(policy_group)
cli.add_command(values_command)
cli.add_command(train_group)
cli.add_command(eval_group)
cli.add_command(classify_command)
cli.add_command(warmup_command)


def _load_plugin_commands() -> None:
    for ep in entry_points(group="vilmo.commands"):
        if ep.name not in cli.commands:
            cli.add_command(ep.load(), ep.name)


def main() -> None:
    _offline_environment()
    _load_plugin_commands()
    cli()
