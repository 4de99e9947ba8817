"""`vilmo train generator` and `vilmo train stakes`: the VILMO generator's two levels of learning."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vilmo.cli.options import data_dir_option
from vilmo.policy import Policy


def all_values_policy() -> Policy:
    """Every taxonomy value at weight 1: train on the whole bank unless a policy narrows it."""
    from vilmo.values import VALUES

    return Policy.model_validate({"name": "all-values",
                                  "values": {v: {"weight": 1.0} for v in VALUES}})


def _classifier_factory(spec: str) -> Callable[[Policy, Any], Any]:
    """``builtin`` (the packaged classifier + zero-shot for custom principles), ``builtin:DIR``
    (other weights), or ``module:function`` taking (policy, encoder) -> ValueClassifier."""
    if spec == "builtin" or spec.startswith("builtin:"):
        model_dir = spec.partition(":")[2] or None

        def builtin(policy: Policy, encoder: Any) -> Any:
            from vilmo.judge.policy_classifier import PolicyClassifiers
            from vilmo.judge.value_model import BuiltinClassifier

            return PolicyClassifiers(BuiltinClassifier(model_dir), encoder)(policy)
        return builtin
    module, _, name = spec.partition(":")
    factory: Callable[[Policy, Any], Any] = getattr(importlib.import_module(module), name)
    return factory


@click.command("generator")
@click.option("--target", required=True, help="LiteLLM model name, e.g. openai/gpt-4o-mini, "
                                              "ollama/llama3, openai/<name> with --api-base.")
@click.option("--api-base", default=None, help="The target's server, e.g. http://localhost:8000/v1.")
@click.option("--api-key", default=None, envvar="VILMO_TARGET_API_KEY",
              help="The target's API key (or $VILMO_TARGET_API_KEY).")
@click.option("--prompts", "prompt_spec", required=True,
              help="Prompt JSONL file, or a set: moral-stories:train, saferlhf:train[:N].")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use this many prompts (seeded sample).")
@click.option("--k", type=click.IntRange(1), default=4, show_default=True,
              help="Replies sampled per candidate.")
@click.option("--candidates", type=click.IntRange(1), default=12, show_default=True,
              help="Candidate instructions (principle x style) tried per prompt.")
@click.option("--run-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Records, costs and the fitted scorer; rerun to resume.")
@click.option("--concurrency", type=click.IntRange(1), default=8, show_default=True,
              help="Requests in flight.")
@click.option("--rpm", type=click.FloatRange(0.0, min_open=True), default=None,
              help="Requests per minute (default: no limit).")
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(0.0), default=1.0, show_default=True)
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="Policy YAML (default: every value, weight 1).")
@click.option("--classifier", "classifier_spec", default="builtin", show_default=True,
              help="builtin, builtin:MODEL_DIR, or module:function(policy, encoder) -> "
                   "ValueClassifier.")
@click.option("--fit/--no-fit", default=True, show_default=True, help="Fit the scorer after.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--seed", default=13, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch CPU threads for the classifier.")
@data_dir_option
def train_generator_command(target: str, api_base: str | None, api_key: str | None,
                            prompt_spec: str, limit: int | None, k: int, candidates: int,
                            run_dir: Path, concurrency: int, rpm: float | None, max_tokens: int,
                            temperature: float, policy_path: Path | None, classifier_spec: str,
                            fit: bool, progress: bool, seed: int, threads: int | None,
                            data_dir: Path | None) -> None:
    """Specialise the VILMO generator to one target model from that model's own replies."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from vilmo.evaluation.prompts import PromptFileError
    from vilmo.evaluation.target import TargetClient, TargetModel
    from vilmo.instruct.candidates import Retriever
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.instruct.stakes import StakesModel, default_stakes_path
    from vilmo.judge.embedder import Int8Embedder
    from vilmo.policy import PolicyError, load_policy
    from vilmo.train.generator import LoopSettings, collect, load_prompts, write_settings

    try:
        policy = load_policy(policy_path) if policy_path else all_values_policy()
        prompts = list(dict.fromkeys(load_prompts(prompt_spec, data_dir)))
    except (PolicyError, PromptFileError) as exc:
        raise click.ClickException(str(exc)) from None
    if not prompts:
        raise click.ClickException(f"no prompt to train on in {prompt_spec}")
    if limit is not None and limit < len(prompts):
        prompts = random.Random(seed).sample(prompts, limit)
    settings = {"target": target, "api_base": api_base, "k": k, "candidates": candidates,
                "policy": policy.name, "prompts": prompt_spec, "limit": limit, "seed": seed,
                "max_tokens": max_tokens, "temperature": temperature}
    try:
        write_settings(run_dir, settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    encoder = Int8Embedder()  # what the gateway embeds prompts with
    retriever = Retriever(PrincipleBank.load(), encoder, StakesModel.load())
    client = TargetClient(TargetModel(target, api_base, api_key, temperature, max_tokens,
                                      concurrency, rpm))
    classifier = _classifier_factory(classifier_spec)(policy, encoder)
    summary = asyncio.run(collect(prompts, policy, retriever, client, classifier, run_dir,
                                  LoopSettings(k=k, candidates=candidates), progress))
    state = json.loads((run_dir / "run.json").read_text())
    click.echo(json.dumps({"prompts": len(prompts), "pairs_done": summary.pairs_done,
                           "pairs_skipped": summary.pairs_skipped,
                           "pairs_failed": summary.pairs_failed, "costs": summary.costs,
                           "total_costs": state["total_costs"]}))
    if summary.pairs_failed:
        click.echo(f"{summary.pairs_failed} pairs failed; rerun the same command to retry them",
                   err=True)
    if fit:
        stakes = hashlib.sha1(default_stakes_path().read_bytes()).hexdigest()[:16]
        _fit(run_dir, policy, retriever, {**settings, "total_costs": state["total_costs"],
                                          "stakes_sha1": stakes})


def _fit(run_dir: Path, policy: Policy, retriever: Any, card: dict[str, Any]) -> None:
    from vilmo.train.generator import read_records
    from vilmo.train.scorer_fit import fit_scorer

    scorer = fit_scorer(read_records(run_dir), policy, retriever, card)
    path = scorer.save(run_dir)
    click.echo(json.dumps({"scorer": str(path), "prompts": scorer.card["prompts"],
                           "pairs": scorer.card["pairs"], "C": scorer.card["C"]}))
    click.echo(f"use it: instructions: {{generator: vilmo, weights: {run_dir}}}", err=True)


@click.command("stakes")
@data_dir_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The .npz to write (default: the package's vilmo/models/stakes.npz).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache prompt embeddings here between runs (one folder per encoder).")
@click.option("--seed", default=13, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True,
              help="ONNX Runtime threads for embedding the prompts.")
def train_stakes_command(data_dir: Path | None, out: Path | None, cache_dir: Path | None,
                         seed: int, threads: int) -> None:
    """Train the values-at-stake model (the gate and the per-value heads, on the int8 encoder's
    embeddings) and measure it on held-out prompts."""
    from vilmo.datasets.readers import data_dir as resolve
    from vilmo.instruct.stakes import default_stakes_path
    from vilmo.judge.embedder import Int8Embedder
    from vilmo.train.stakes import StakesSettings, train_stakes

    root = resolve(data_dir)
    if not root.exists():
        raise click.ClickException(f"data folder {root} not found (set VILMO_DATA_DIR)")
    encoder = Int8Embedder(cache_size=1024, batch_size=64, threads=threads)
    card = train_stakes(root, encoder, out or default_stakes_path(),
                        StakesSettings(seed=seed, cache_dir=cache_dir))
    click.echo(json.dumps(card["heldout"], indent=1))


@click.command("stakes-reader")
@data_dir_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The folder to write (default: the package's vilmo/models/stakes_reader).")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True)
@click.option("--seed", default=13, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="torch threads.")
@click.option("--extra-requests", is_flag=True,
              help="Also train on the project's written requests and JailbreakBench's goals.")
def train_stakes_reader_command(data_dir: Path | None, out: Path | None, epochs: int, seed: int,
                                threads: int, extra_requests: bool) -> None:
    """Fine-tune the request reader (top encoder layers + gate and value outputs) on the
    values-at-stake prompts; calibrate its gate and choose its threshold on dev."""
    from vilmo.datasets.readers import data_dir as resolve
    from vilmo.instruct.stakes_reader import default_reader_dir
    from vilmo.train.stakes_reader import ReaderSettings, train_reader

    root = resolve(data_dir)
    if not root.exists():
        raise click.ClickException(f"data folder {root} not found (set VILMO_DATA_DIR)")
    config = train_reader(root, out or default_reader_dir(),
                          ReaderSettings(epochs=epochs, seed=seed, threads=threads,
                                         extra_requests=extra_requests))
    click.echo(json.dumps(config["gate"], indent=1))
