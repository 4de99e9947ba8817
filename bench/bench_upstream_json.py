"""The cost of reading upstream JSON where it enters the gateway, per chunk or reply, against
a baseline tree's (``proxy.wellformed`` of another checkout; a benchmark, not a test).

Direct path: the bytes parsed and made well-formed (``parse_upstream``, which refuses NaN and
infinities, then ``make_well_formed`` with the bytes) against ``json.loads`` and the baseline's
walk. LiteLLM path: the walk of an already parsed tree (now also checking each float) against
the baseline's. Both sides timed in one process, interleaved, on the same texts (medians of
``--repeats`` rounds, ratio after / before).

    python bench/bench_upstream_json.py --baseline /tmp/base-tree [--repeats 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_store import cpu_name

from proxy.wellformed import make_well_formed, parse_upstream

HEAD = {"id": "chatcmpl-9x8Yb2cQ1f", "object": "chat.completion.chunk", "created": 1764561600,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0ba0d124f1"}
TOKEN = {"token": " calm", "logprob": -0.0123, "bytes": [32, 99, 97, 108, 109],
         "top_logprobs": [{"token": t, "logprob": p, "bytes": None}
                          for t, p in ((" calm", -0.0123), (" quiet", -4.51), (" kind", -6.2))]}
SAMPLES: dict[str, bytes] = {
    "content chunk": json.dumps({**HEAD, "choices": [
        {"index": 0, "delta": {"content": " calm"}, "logprobs": None,
         "finish_reason": None}]}).encode(),
    "chunk with logprobs": json.dumps({**HEAD, "choices": [
        {"index": 0, "delta": {"content": " calm"}, "logprobs": {"content": [TOKEN]},
         "finish_reason": None}]}).encode(),
    "reply (1 KB)": json.dumps({**HEAD, "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "It was a calm and kind day. "
                                 * 30, "refusal": None}, "logprobs": None,
         "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 190, "total_tokens": 201}}).encode(),
}


def baseline_module(tree: Path) -> ModuleType:
    return load_module("baseline_wellformed", tree / "proxy" / "wellformed.py")


def load_module(name: str, path: Path) -> ModuleType:
    """A module from a file of another tree (a baseline), under its own name."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def direct_entry(parse: Callable[[bytes], Any], walk: Callable[[Any, bytes], bool],
                 raw: bytes) -> bool:
    """What the direct path does with an event's bytes: parse, then make well-formed."""
    return walk(parse(raw), raw)


def per_call_us(call: Callable[[], Any], number: int) -> float:
    return timeit.timeit(call, number=number) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a checkout whose proxy/wellformed.py is the baseline")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    base = baseline_module(args.baseline)
    before_walk: Callable[..., bool] = getattr(base, "make_well_formed", None) or base.replace_lone_surrogates
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}\n")
    print("| path | JSON | before (µs) | after (µs) | after / before |\n|---|---|---|---|---|")
    for name, raw in SAMPLES.items():
        tree = json.loads(raw)
        cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "direct": (partial(direct_entry, json.loads, before_walk, raw),
                       partial(direct_entry, parse_upstream, make_well_formed, raw)),
            "LiteLLM": (partial(before_walk, tree), partial(make_well_formed, tree)),
        }
        for path, (before, after) in cases.items():
            times: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(args.repeats):
                order = [("before", before), ("after", after)]
                for label, call in (order if r % 2 == 0 else order[::-1]):
                    times[label].append(per_call_us(call, args.number))
            old, new = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"| {path} | {name} ({len(raw)} B) | {old:.2f} | {new:.2f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
