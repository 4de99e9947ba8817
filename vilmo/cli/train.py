"""`vilmo train ...`: training pipelines (the classifier here; generators join the group)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from vilmo.cli.options import data_dir_option
from vilmo.cli.train_generator import (
    train_generator_command,
    train_stakes_command,
    train_stakes_reader_command,
)

if TYPE_CHECKING:
    from vilmo.train.examples import DevSplit


@click.group("train")
def train_group() -> None:
    """Train the project's models from the data folder."""


@train_group.command("classifier")
@data_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where to write the weights (default: the package's models).")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True)
@click.option("--seed", default=13, show_default=True)
@click.option("--frozen-layers", type=click.IntRange(0), default=4, show_default=True,
              help="Bottom encoder layers kept as packaged; the layers above them are trained.")
@click.option("--valueeval-dev-by", type=click.Choice(["conclusion", "premise"]),
              default="conclusion", show_default=True,
              help="Draw ValueEval's dev part by conclusion (unseen in training, like the "
                   "validation file) or by premise.")
@click.option("--encoder", type=click.Path(exists=True, file_okay=False), default=None,
              help="A sentence-transformers (BERT-family) folder to fine-tune instead of the "
                   "packaged all-MiniLM-L6-v2; the weights' config points to it for serving.")
@click.option("--train-length", type=click.IntRange(8, 512), default=128, show_default=True,
              help="Training reads the first window of each text cut to this many tokens "
                   "(serving reads windows of 256); a step costs more the longer it is.")
@click.option("--alone-weight", type=click.FloatRange(0.0, 1.0), default=0.25,
              show_default=True,
              help="Share of a reply's whole reading taken from the reply read without its "
                   "prompt (window.alone_weight; 0: read after the prompt only); with "
                   "--calibrate-only only when given (else the config's is kept).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch CPU threads (default: all).")
@click.option("--bf16", is_flag=True,
              help="Train under bfloat16 autocast: faster on CPUs with AMX or AVX-512 BF16, "
                   "slower elsewhere; the shipped weights were trained with it.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Train on this many examples (smoke).")
@click.option("--calibrate-only", is_flag=True,
              help="Keep the weights in --out; refit their calibration on dev (after a runtime "
                   "change).")
@click.option("--refit-topics", is_flag=True,
              help="Keep the encoder and every other head row in --out; refit the topic rows "
                   "on the served network's frozen features, then the calibration (as "
                   "--calibrate-only).")
@click.option("--topic-l2", type=click.FloatRange(0.0), default=0.004215, show_default=True,
              help="With --refit-topics: the pull of the topic rows towards the current ones.")
def train_classifier_command(data_dir: Path | None, out_dir: Path | None, epochs: int, seed: int,
                             frozen_layers: int, valueeval_dev_by: str, encoder: str | None,
                             train_length: int, alone_weight: float, threads: int | None,
                             bf16: bool, limit: int | None, calibrate_only: bool,
                             refit_topics: bool, topic_l2: float) -> None:
    """Fine-tune the value classifier (top encoder layers + heads), calibrate it, and fit the
    zero-shot judge's calibration (written beside it as zero_shot.json)."""
    import torch

    from vilmo.datasets.readers import data_dir as resolve
    from vilmo.judge.value_model import default_model_dir
    from vilmo.train.classifier import TrainSettings, recalibrate, train_classifier

    if threads:
        torch.set_num_threads(threads)
    root = resolve(data_dir)
    if not root.exists():
        raise click.ClickException(f"data folder {root} not found (set VILMO_DATA_DIR)")
    target = out_dir or default_model_dir()
    given = click.get_current_context().get_parameter_source("alone_weight")
    kept_weight = alone_weight if given is click.core.ParameterSource.COMMANDLINE else None
    if refit_topics:
        from vilmo.train.head_refit import refit_topics as refit

        config = refit(root, target, topic_l2, alone_weight=kept_weight)
        click.echo(json.dumps({"topic_refit": config["training"]["topic_refit"],
                               "operating_rule": config["operating_rule"],
                               "plain_operating_rule": config["plain_operating_rule"]}))
        return
    if calibrate_only:
        # Recalibrating must not silently change how the weights read replies: the config's
        # weight stays unless the option was given.
        config = recalibrate(root, target, alone_weight=kept_weight)
        click.echo(json.dumps({"calibrated_on": config["calibrated_on"]}))
        return
    config = train_classifier(root, target, TrainSettings(
        epochs=epochs, seed=seed, limit=limit, n_frozen=frozen_layers, bf16=bf16,
        train_length=train_length, alone_weight=alone_weight,
        valueeval_dev_by=cast("DevSplit", valueeval_dev_by), encoder=encoder))
    click.echo(json.dumps(config["training"]))
    from vilmo.train.zero_shot import fit

    click.echo(json.dumps({"zero_shot": fit(root, out=target.parent / "zero_shot.json")}))


train_group.add_command(train_generator_command)  # VILMO generator (vilmo/cli/train_generator.py)
train_group.add_command(train_stakes_command)
train_group.add_command(train_stakes_reader_command)  # fine-tuned request reader
