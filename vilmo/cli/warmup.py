"""`vilmo warmup`: build the ONNX graphs the gateway serves with, once, into the cache.

Exporting a graph needs torch; reading one needs only onnxruntime and tokenizers. So after this
command a gateway process (with the same ``VILMO_CACHE_DIR``) never imports torch or
transformers: less memory per worker and a faster start. ``make serve`` and the Dockerfile run
it; running it again when the graphs are cached does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import click


def serving_graphs() -> list[tuple[str, Callable[[], Path], Callable[[], None]]]:
    """(what it is, where its graph is cached, how to build it) for every graph the gateway
    loads: the value judge, the int8 prompt encoder, the fp32 zero-shot encoder."""
    from vilmo.judge.embedder import OnnxEmbedder
    from vilmo.judge.value_model import BuiltinClassifier

    judge = BuiltinClassifier(cache_size=0)
    prompts = OnnxEmbedder(cache_size=0)
    zero_shot = OnnxEmbedder(cache_size=0, quantized=False)
    return [("value judge (int8)", judge.graph_path, judge.warm_up),
            ("prompt encoder (int8)", prompts.graph_path, prompts.warm_up),
            ("zero-shot encoder (fp32)", zero_shot.graph_path, zero_shot.warm_up)]


def missing_graphs() -> list[Path]:
    """The serving graphs not in the cache yet."""
    return [path for _, where, _ in serving_graphs() if not (path := where()).exists()]


@click.command("warmup")
def warmup_command() -> None:
    """Build and cache the gateway's ONNX graphs (judge, prompt encoders); needs torch once."""
    from vilmo.judge.value_onnx import cache_dir

    click.echo(f"ONNX graphs in {cache_dir() / 'onnx'}")
    for name, where, build in serving_graphs():
        cached = where().exists()
        started = time.perf_counter()
        build()
        path = where()
        state = "cached" if cached else f"built in {time.perf_counter() - started:.1f} s"
        click.echo(f"  {name}: {path.name} ({path.stat().st_size / 1e6:.0f} MB, {state})")
