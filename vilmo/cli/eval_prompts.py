"""`vilmo eval --target MODEL ...`: the prompt evaluation (options of the `eval` group itself).

The classifier and the VILMO generator can be injected through the click context object
(``{"classifier": ..., "generators": {"vilmo": ...}}``), which is how tests run the command
against a fake judge; by default the built-in classifier and generator are loaded.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from vilmo.evaluation.prompts import EvalPrompt
    from vilmo.instruct.instructions import InstructionGenerator
    from vilmo.judge.classifier import ValueClassifier
    from vilmo.policy import Policy

F = TypeVar("F", bound=Callable[..., object])
CONDITIONS = ("none", "static", "relevance", "vilmo")

_OPTIONS = [
    click.option("--target", default=None, metavar="MODEL",
                 help="LiteLLM model to evaluate, e.g. openai/gpt-4o-mini or openai/local."),
    click.option("--prompts", "prompt_spec", default="moral-stories:test", show_default=True,
                 metavar="FILE_OR_SET", help="A JSONL prompt file, or moral-stories[:train|:test]"
                                             ", saferlhf:train|test[:N]."),
    click.option("--k", type=click.IntRange(1, 100), default=4, show_default=True,
                 help="Samples per prompt and condition."),
    click.option("--conditions", default=",".join(CONDITIONS), show_default=True,
                 help="Comma-separated: none, static, relevance, vilmo."),
    click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
    click.option("--api-base", default=None, help="The target's base URL (OpenAI-compatible)."),
    click.option("--api-key", default=None, envvar="VILMO_TARGET_API_KEY",
                 help="The target's API key (or $VILMO_TARGET_API_KEY)."),
    click.option("--policy", "policy_file", type=click.Path(dir_okay=False, exists=True),
                 default=None, help="Policy giving weights, placement and instruction settings "
                                    "(default: the prompts' values, weight 1, system placement)."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                 default=None, help="Where to write summary, records, report and plot "
                                    "(default: runs/eval-<UTC time>)."),
    click.option("--limit", type=click.IntRange(1), default=None,
                 help="Use this many prompts, taken round-robin over their first value."),
    click.option("--max-tokens", type=click.IntRange(1), default=128, show_default=True),
    click.option("--temperature", type=click.FloatRange(0.0), default=1.0, show_default=True),
    click.option("--concurrency", type=click.IntRange(1), default=8, show_default=True),
    click.option("--vilmo-weights", type=click.Path(exists=True, path_type=Path), default=None,
                 help="The vilmo condition's per-target scorer (a `vilmo train generator` run "
                      "directory or its scorer.npz)."),
    click.option("--judge-with-prompt/--judge-reply-only", default=True, show_default=True,
                 help="Give the classifier the prompt as context for each reply, or the reply "
                      "alone."),
    click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads."),
]


def prompt_eval_options(func: F) -> F:
    """The options of `vilmo eval` itself (the group callback runs the prompt evaluation)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def limit_prompts(prompts: list[EvalPrompt], n: int | None) -> list[EvalPrompt]:
    """The first n prompts taken round-robin over their first value, so a small slice of a
    set ordered by value still covers every value."""
    if n is None or n >= len(prompts):
        return prompts
    groups: dict[str, list[EvalPrompt]] = {}
    for p in prompts:
        groups.setdefault(p.values[0] if p.values else "", []).append(p)
    chosen: list[EvalPrompt] = []
    for i in range(max(len(g) for g in groups.values())):
        chosen += [g[i] for g in groups.values() if i < len(g)]
    return chosen[:n]


def default_policy(prompts: list[EvalPrompt]) -> Policy:
    """Every value the prompts name, weight 1 (the five foundations when they name none)."""
    from vilmo.policy import Policy
    from vilmo.values import values_in

    ids = list(dict.fromkeys(v for p in prompts for v in p.values)) or \
        [v.id for v in values_in("mft")]
    return Policy.model_validate({"name": "eval-default", "values": {v: {} for v in ids}})


def build_conditions(names: list[str], policy: Policy, obj: dict[str, Any],
                     vilmo_weights: Path | None) -> dict[str, InstructionGenerator | None]:
    """The generator of each requested condition; `vilmo` is skipped, with a message on
    stderr, when its model cannot be loaded."""
    from vilmo.evaluation.evaluate import StaticGenerator, WithSettings

    injected: dict[str, InstructionGenerator] = obj.get("generators", {})
    out: dict[str, InstructionGenerator | None] = {}
    for name in names:
        if name in injected:
            out[name] = injected[name]
        elif name == "none":
            out[name] = None
        elif name == "static":
            out[name] = StaticGenerator()
        elif name == "relevance":
            out[name] = WithSettings(_relevance(), generator="relevance")
        elif name == "vilmo":
            generator = _vilmo(vilmo_weights)
            if generator is not None:
                out[name] = generator
        else:
            raise click.BadParameter(f"unknown condition {name!r} (choose from "
                                     f"{', '.join(CONDITIONS)})", param_hint="--conditions")
    return out


def _relevance() -> InstructionGenerator:
    from vilmo.instruct.instructions import RelevanceGenerator
    from vilmo.instruct.principles import PrincipleBank
    from vilmo.judge.embedder import Embedder

    return RelevanceGenerator(PrincipleBank.load(), Embedder())


def _vilmo(weights: Path | None) -> InstructionGenerator | None:
    from vilmo.evaluation.evaluate import WithSettings

    try:
        from vilmo.instruct.generator import VilmoGenerator
        from vilmo.instruct.principles import PrincipleBank
        from vilmo.instruct.second_look import SecondLook
        from vilmo.instruct.stakes_reader import shipped_reader
        from vilmo.judge.embedder import Int8Embedder
        from vilmo.judge.value_model import BuiltinClassifier

        # As the gateway builds it: the request reader (where shipped), and the judge's second
        # look at unsure prompts.
        generator = VilmoGenerator(PrincipleBank.load(), shipped_reader() or Int8Embedder(),
                                   second_look=SecondLook(BuiltinClassifier()))
    except (ImportError, FileNotFoundError, OSError) as exc:
        click.echo(f"skipping condition vilmo: the VILMO generator needs trained weights "
                   f"(`vilmo train generator`): {exc}", err=True)
        return None
    if weights is None:
        click.echo("condition vilmo: no --vilmo-weights given, so no per-target scorer: "
                   "values-at-stake retrieval in relevance order", err=True)
    return WithSettings(generator, generator="vilmo",
                        weights=str(weights.resolve()) if weights else None)


def _classifier(obj: dict[str, Any]) -> ValueClassifier:
    if obj.get("classifier") is not None:
        return obj["classifier"]  # type: ignore[no-any-return]
    from vilmo.judge.value_model import BuiltinClassifier, default_model_dir

    if not (default_model_dir() / "config.json").exists():
        raise click.ClickException(f"the built-in value classifier has no weights in "
                                   f"{default_model_dir()} (run `vilmo train classifier`)")
    return BuiltinClassifier()


def ready_out_dir(out: Path) -> Path:
    """``out``, created and shown writable before any sample is paid for: a path under a file
    or in a read-only folder is a clean error now, not a traceback after the run."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise click.ClickException(f"--out {out}: cannot write there: {exc}") from None
    return out


def run_prompt_eval(ctx: click.Context, *, target: str, prompt_spec: str, k: int,
                    conditions: str, as_json: bool, api_base: str | None, api_key: str | None,
                    policy_file: str | None, out_dir: Path | None, limit: int | None,
                    max_tokens: int, temperature: float, concurrency: int,
                    vilmo_weights: Path | None, judge_with_prompt: bool,
                    threads: int | None) -> None:
    """Sample, judge, summarise, write the outputs and print the summary."""
    from vilmo.evaluation.evaluate import sample_and_score, summarise
    from vilmo.evaluation.prompts import PromptFileError, load_prompt_set
    from vilmo.evaluation.report import write_outputs, write_records
    from vilmo.evaluation.target import TargetClient, TargetModel
    from vilmo.policy import PolicyError, load_policy

    if threads:
        import torch

        torch.set_num_threads(threads)
    obj: dict[str, Any] = ctx.find_root().obj or {}
    try:
        prompts = limit_prompts(load_prompt_set(prompt_spec), limit)
        policy = load_policy(policy_file) if policy_file else default_policy(prompts)
    except (PromptFileError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None
    if not prompts:
        raise click.ClickException(f"no prompt to evaluate in {prompt_spec}")
    names = [c.strip() for c in conditions.split(",") if c.strip()]
    generators = build_conditions(names, policy, obj, vilmo_weights)
    if not generators:
        raise click.ClickException(f"no condition left to run (--conditions {conditions!r})")
    classifier = _classifier(obj)
    out = ready_out_dir(out_dir or Path("runs") / f"eval-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    client = TargetClient(TargetModel(target, api_base, api_key, temperature, max_tokens,
                                      concurrency))
    records = sample_and_score(prompts, client, classifier, generators, policy, k,
                               with_prompt=judge_with_prompt,
                               progress=lambda msg: click.echo(msg, err=True))
    try:
        write_records(records, out)  # before the summary: what was paid for is kept
        result = summarise(records, list(generators), policy, k, client.target.model,
                           client.costs.as_dict())
        paths = write_outputs(result, out)
    except OSError as exc:
        raise click.ClickException(f"cannot write the outputs to {out}: {exc}") from None
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())}", err=True)
    if result.n_prompts == 0:
        raise click.ClickException(
            f"no prompt has a scored reply under every condition "
            f"({result.costs.get('failed_calls', 0)} failed calls to {target}); the records and "
            f"costs are in {out}")
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary))
        return
    sys.stdout.write(paths["report"].read_text(encoding="utf-8"))
