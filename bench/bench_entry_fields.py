"""The cost of the whole entry of an upstream reply or chunk (``proxy.upstream.entered``: made
well formed, choices checked, and since the allow-list only allow-listed fields kept) against a
baseline tree's ``entered`` (a benchmark, not a test).

Direct path: the event's bytes parsed (``parse_upstream``) and entered with them; LiteLLM path:
a parsed tree entered without bytes (every string walked). Each call parses afresh, so a field
removed in one call is there again in the next; both sides timed in one process, interleaved,
on the same texts (medians of ``--repeats`` rounds, ratio after / before). A chunk is entered
as a stream enters it: with its stream's labels (``proxy.fields.StreamLabels``), held from an
earlier chunk; the baseline tree's ``entered`` runs on its own ``proxy/fields.py``.

    git archive <base> proxy | tar -x -C /tmp/base-tree
    python bench/bench_entry_fields.py --baseline /tmp/base-tree [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_store import cpu_name
from bench_upstream_json import HEAD, SAMPLES, TOKEN, load_module, per_call_us

from proxy.fields import StreamLabels
from proxy.upstream import entered
from proxy.wellformed import parse_upstream

CASES: dict[str, tuple[str, bytes]] = {
    **{name: ("message" if name.startswith("reply") else "delta", raw)
       for name, raw in SAMPLES.items()},
    "chunk, an unknown field": ("delta", json.dumps({**HEAD, "x_extra": {"note": "hi"}, "choices": [
        {"index": 0, "delta": {"content": " calm"}, "finish_reason": None,
         "text": " calm"}]}).encode()),
    "usage chunk": ("delta", json.dumps({**HEAD, "choices": [], "usage": {
        "prompt_tokens": 11, "completion_tokens": 190, "total_tokens": 201,
        "completion_tokens_details": {"reasoning_tokens": 0}}}).encode()),
    "chunk, no top_logprobs": ("delta", json.dumps({**HEAD, "choices": [
        {"index": 0, "delta": {"content": " calm"}, "finish_reason": None,
         "logprobs": {"content": [{**TOKEN, "top_logprobs": []}]}}]}).encode()),
    "chunk, a tool call": ("delta", json.dumps({**HEAD, "choices": [
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_9x8Yb2cQ1f",
                                               "type": "function", "function": {
                                                   "name": "act", "arguments": "{\"a\": 1}"}}]},
         "finish_reason": None}]}).encode()),
}


def baseline_entered(tree: Path) -> Callable[..., bool]:
    """The baseline's ``entered`` (its ``proxy/upstream.py`` on its ``proxy/fields.py``, on this
    tree's other modules)."""
    fields = load_module("baseline_fields", tree / "proxy" / "fields.py")
    ours = sys.modules["proxy.fields"]
    sys.modules["proxy.fields"] = fields  # what the baseline's upstream.py imports
    try:
        module = load_module("baseline_upstream", tree / "proxy" / "upstream.py")
    finally:
        sys.modules["proxy.fields"] = ours
    return module.entered  # type: ignore[no-any-return]


def in_stream(part: str, raw: bytes) -> Callable[..., bool]:
    """This tree's ``entered`` as a stream calls it: with the stream's labels, held from an
    earlier chunk like this one (a reply's: none)."""
    if part == "message":
        return entered
    labels = StreamLabels()
    entered(json.loads(raw), part, "m", stream=labels)
    return partial(entered, stream=labels)


def direct(enter: Callable[..., bool], part: str, raw: bytes) -> bool:
    return enter(parse_upstream(raw), part, "m", raw)


def litellm(enter: Callable[..., bool], part: str, raw: bytes) -> bool:
    return enter(json.loads(raw), part, "m")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a checkout whose proxy/upstream.py is the baseline")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    before_entered = baseline_entered(args.baseline)
    print(f"CPU: {cpu_name()}; Python {platform.python_version()}\n")
    print("| path | JSON | before (µs) | after (µs) | after / before |\n|---|---|---|---|---|")
    for name, (part, raw) in CASES.items():
        for path, run in (("direct", direct), ("LiteLLM", litellm)):
            before = partial(run, before_entered, part, raw)
            after = partial(run, in_stream(part, raw), part, raw)
            times: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(args.repeats):
                order = [("before", before), ("after", after)]
                for label, call in (order if r % 2 == 0 else order[::-1]):
                    times[label].append(per_call_us(call, args.number))
            old, new = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"| {path} | {name} ({len(raw)} B) | {old:.2f} | {new:.2f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
