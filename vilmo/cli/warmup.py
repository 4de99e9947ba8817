"""`vilmo warmup`: build the ONNX graphs the gateway serves with, once, into the cache.

Exporting a graph needs torch; reading one needs only onnxruntime and tokenizers. So after this
command a gateway process (with the same ``VILMO_CACHE_DIR``) never imports torch or
transformers: less memory per worker and a faster start. ``make serve`` and the Dockerfile run
it; running it again when the graphs are cached does nothing.
"""

from __future__ import annotations

import time

import click

from vilmo.judge.graphs import serving_graphs


@click.command("warmup")
def warmup_command() -> None:
    """Build and cache the gateway's ONNX graphs (judge, request reader, encoder); needs torch
    once."""
    from vilmo.judge.graph_files import cache_dir

    click.echo(f"ONNX graphs in {cache_dir() / 'onnx'}")
    for name, where, build in serving_graphs():
        cached = where().exists()
        started = time.perf_counter()
        build()
        path = where()
        state = "cached" if cached else f"built in {time.perf_counter() - started:.1f} s"
        click.echo(f"  {name}: {path.name} ({path.stat().st_size / 1e6:.0f} MB, {state})")
