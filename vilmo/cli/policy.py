"""`vilmo policy`: the policy file's schema, and validation of policy files."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vilmo.policy import PolicyError, load_policy, policy_schema


@click.group("policy")
def policy_group() -> None:
    """Value policy files."""


@policy_group.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of a policy file."""
    click.echo(json.dumps(policy_schema(), indent=2))


@policy_group.command("validate")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate_command(files: tuple[Path, ...]) -> None:
    """Check policy files; print every error with its file, line and field."""
    failed = False
    for path in files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed = True
            for issue in exc.issues:
                click.echo(str(issue), err=True)
        else:
            click.echo(f"{path}: ok (policy {policy.name!r}, {len(policy.values)} values)")
    if failed:
        raise SystemExit(1)
