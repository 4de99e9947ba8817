"""`vilmo eval ...`: held-out evaluations: the classifier (`vilmo eval classifier`) and, with
`--target`, instruction conditions on a target model (`vilmo.cli.eval_prompts`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from vilmo.cli.eval_prompts import prompt_eval_options, run_prompt_eval
from vilmo.cli.options import data_dir_option


@click.group("eval", invoke_without_command=True)
@prompt_eval_options
@click.pass_context
def eval_group(ctx: click.Context, /, **options: Any) -> None:
    """Evaluate the project's models on held-out data.

    With --target: sample prompts under each instruction condition from a target model, judge
    the replies and report EVR / MVP / APV with 95 % CIs (see vilmo.evaluation.evaluate).
    """
    if ctx.invoked_subcommand is not None:
        return
    if options["target"] is None:
        click.echo(ctx.get_help())
        return
    run_prompt_eval(ctx, **options)


@eval_group.command("classifier")
@data_dir_option
@click.option("--model-dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="Weights to evaluate (default: the packaged ones).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="Policy whose values and thresholds define 'flagged' (default: the shipped "
                   "policies/default.yaml).")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
def eval_classifier_command(data_dir: Path | None, model_dir: Path | None, as_json: bool,
                            policy_file: Path | None, threads: int | None) -> None:
    """Held-out figures of the built-in value classifier, with 95 % CIs."""
    from vilmo.datasets.readers import data_dir as resolve
    from vilmo.evaluation.classifier_eval import evaluate
    from vilmo.judge.value_model import BuiltinClassifier

    if threads:
        import torch

        torch.set_num_threads(threads)
    if policy_file is not None:
        from vilmo.policy import PolicyError, load_policy

        try:
            load_policy(policy_file)  # a usage error now, not a traceback from the evaluation
        except PolicyError as exc:
            raise click.ClickException(str(exc)) from None
    root = resolve(data_dir)
    if not root.exists():
        raise click.ClickException(f"data folder {root} not found (set VILMO_DATA_DIR)")
    report = evaluate(root, BuiltinClassifier(model_dir, threads=os.cpu_count() or 1),
                      policy=policy_file,
                      progress=lambda step: click.echo(f"evaluating {step}", err=True))
    if as_json:
        click.echo(json.dumps(report))
        return
    for name, figures in report.items():
        click.echo(f"{name}: {json.dumps(figures, indent=1)}")
