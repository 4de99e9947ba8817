"""`vilmo values`: list the value taxonomy."""

from __future__ import annotations

import json

import click

from vilmo.values import VALUES


@click.command("values")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per value.")
def values_command(as_json: bool) -> None:
    """List every value id with its definition."""
    for v in VALUES.values():
        if as_json:
            click.echo(json.dumps({"id": v.id, "system": v.system, "name": v.name,
                                   "definition": v.definition}))
        else:
            click.echo(f"{v.id:28} {v.name}: {v.definition}")
