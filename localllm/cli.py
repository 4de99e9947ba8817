"""`vilmo local-llm`: serve the local model over an OpenAI-compatible API.

Registered through the ``vilmo.commands`` entry point (see pyproject.toml), so the ``vilmo``
library never imports this package or its web framework.
"""

from __future__ import annotations

from pathlib import Path

import click

from localllm.engine import DEFAULT_TOP_K, MODEL_ID


@click.command("local-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8008, show_default=True)
@click.option("--batch-size", default=32, show_default=True,
              help="Most concurrent requests sampled together.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the dense bf16 weights are kept after the first load "
                   "(default: $VILMO_LOCAL_LLM_CACHE or ~/.cache/vilmo/localllm).")
@click.option("--top-k", default=DEFAULT_TOP_K, show_default=True,
              help="Sample each token from this many most likely ones.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--seed", type=int, default=None, help="Seed the sampler (reproducible runs).")
def local_llm(host: str, port: int, batch_size: int, cache_dir: Path | None, top_k: int,
              threads: int | None, seed: int | None) -> None:
    """Serve Gemma 3 270M (base, GGUF; Gemma Terms of Use) at /v1 for offline runs.

    A base model: it continues text and does not follow instructions. Use it as
    `--target openai/gemma-3-270m --api-base http://HOST:PORT/v1` in `vilmo eval`.
    """
    import torch
    import uvicorn

    from localllm.engine import ModelMissing, TorchEngine, load
    from localllm.server import create_app

    if threads:
        torch.set_num_threads(threads)
    click.echo("loading the model (the first run dequantises it, about a minute)", err=True)
    try:
        model, tokenizer = load(cache_dir)
    except ModelMissing as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(TorchEngine(model, tokenizer, top_k, seed), MODEL_ID, batch_size)
    uvicorn.run(app, host=host, port=port, log_level="warning")
