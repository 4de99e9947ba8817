"""Where a request's time goes, stage by stage, at c=1 (a benchmark, not a test; issue 16).

One stub upstream and `vilmo serve` of each tree (this checkout, and optionally a baseline tree,
visited in alternating order each round; with a baseline, a last column gives the median of this
tree's time less the baseline's, round by round), each gateway started with timing wrappers around
its stages (the wrappers only read the clock; nothing else changes). Targets: the `default` policy
on a plain request, `default` in monitor mode and no policy on a stream. Per target, the median
over the rounds of: the gateway's own time (first byte of the request to the last byte of the
response; to the first content chunk for streams), the instruction step (the request reader's pass,
the judge's passes for the second look), the reply check (the judge's ONNX batches, its tokenising
and pooling, the micro-batcher's hand-offs), the upstream call, the record. Every target of a round
reads the same question (``round_prompt``): the instruction step's passes depend on it (a question
with a value at stake costs the reader a second half).

    python bench/trace_request_path.py [--baseline-tree /tmp/base] [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx
from bench_serving import REPLY
from harness import (
    chat_body,
    prompts,
    timed_post,
    timed_stream,
    traced_gateways,
)

TARGETS = (
    ("default, plain", "default", False),
    ("no policy, plain", "passthrough", False),
    ("default monitor, stream", "default-monitor", True),
    ("no policy, stream", "passthrough", True),
)
KINDS = dict(
    zip(
        (label for label, _, _ in TARGETS),
        ("plain", "bare plain", "monitor", "bare stream"),
        strict=True,
    )
)

BOOT = r"""
import functools, inspect, json, os, re, signal, sys, time
EVENTS = []
def wrap(owner, attr, name):
    f = getattr(owner, attr)
    if inspect.iscoroutinefunction(f):
        async def w(*a, **k):
            s = time.perf_counter()
            try: return await f(*a, **k)
            finally: EVENTS.append((name, s, time.perf_counter()))
    else:
        def w(*a, **k):
            s = time.perf_counter()
            try: return f(*a, **k)
            finally: EVENTS.append((name, s, time.perf_counter()))
    setattr(owner, attr, functools.wraps(f)(w))
import proxy.app, proxy.guard, proxy.services, proxy.stages, vilmo.judge.batcher as batcher
import vilmo.judge.embedder as embedder, vilmo.judge.value_model as vm, vilmo.judge.value_onnx as vo
wrap(proxy.guard.Guard, "instruction", "instruction")
wrap(embedder.CachedGraph, "_run", "reader")
import vilmo.instruct.stakes_reader as sr
for attr in ("_read_half", "_embed_rest"):  # the split reader's halves (absent in older trees)
    if hasattr(sr.StakesReader, attr): wrap(sr.StakesReader, attr, "reader")
wrap(vm.BuiltinClassifier, "score", "judge")
wrap(proxy.stages.TimedUpstream, "complete", "upstream")
wrap(proxy.guard.Guard, "check_choices", "check")
wrap(batcher.MicroBatcher, "_execute", "batch")
wrap(vm.BuiltinClassifier, "_window_logits", "windows")
wrap(vo, "run_batches", "onnx")
wrap(proxy.services.Services, "finish", "record")
factory = proxy.app.app_from_environment
def traced():
    app = factory()
    async def asgi(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await app(scope, receive, send)
        start, first = time.perf_counter(), []
        async def sending(message):
            if not first and re.search(rb'"content": ?"[^"]', message.get("body", b"")):
                first.append(time.perf_counter())
            await send(message)
        try: await app(scope, receive, sending)
        finally:
            EVENTS.append(("gateway", start, time.perf_counter()))
            if first: EVENTS.append(("first content", start, first[0]))
    asgi.state = app.state
    return asgi
proxy.app.app_from_environment = traced
signal.signal(signal.SIGUSR1, lambda *_: open(os.environ["TRACE_OUT"], "w").write(json.dumps(EVENTS)))
from vilmo.cli import main
sys.argv = ["vilmo", *sys.argv[1:]]
main()
"""


WARM_UP_ROUNDS = 3
"""Rounds run first and dropped from every median."""
DUMP_WAIT_S = 30.0
"""How long to wait for every gateway to have recorded every request (``dumped_events``)."""


class DumpedRun(Protocol):
    """What ``dumped_events`` needs of ``harness.TracedRun``."""

    work: Path
    trees: dict[str, Path]

    def dump_traces(self) -> None: ...


def dumped_events(run: DumpedRun, requests: int) -> dict[str, list[tuple[str, float, float]]]:
    """Each tree's events, once its gateway has recorded all ``requests`` (its ``gateway``
    spans). A gateway appends a request's span when the request's app returns, which can be
    just after its client has read the last byte: dumped at once, the last request (the
    ``no policy, stream`` target of the last round) was missing, so that target had one sample
    less than the others, and with ``--rounds 1`` none past the warm-up: ``statistics.median``
    of nothing raised."""
    deadline = time.monotonic() + DUMP_WAIT_S
    while True:
        run.dump_traces()
        events = {name: [(str(e[0]), float(e[1]), float(e[2]))
                         for e in json.loads((run.work / f"{name}.json").read_text())]
                  for name in run.trees}
        spans = {name: sum(e[0] == "gateway" for e in found) for name, found in events.items()}
        if all(count >= requests for count in spans.values()) or time.monotonic() > deadline:
            for name, count in spans.items():
                if count < requests:
                    print(f"warning: {name} recorded {count} of {requests} requests")
            return events


def median_cell(values: Sequence[float], signed: bool = False) -> str:
    """The median, or ``n/a`` for a stage with no sample (never a crash of the report)."""
    if not values:
        return "n/a"
    return f"{statistics.median(values):{'+' if signed else ''}.2f}"


def round_prompt(round_: int, target: int) -> str:
    """Round ``round_``'s prompt for one target: the same question for every target and tree
    of a round (whether a value is at stake, so which passes the instruction step runs,
    depends on it), made distinct by its case number so that no cache of the tree's gateway
    hides a pass (each tree has its own store)."""
    question = prompts(round_ + 1)[round_]
    return question.replace(f"(case {round_})", f"(case {round_}.{target})")


def stages(events: list[tuple[str, float, float]], kind: str) -> dict[str, list[float]]:
    """Per stage, its milliseconds in each request of ``kind`` (the requests told apart by their
    events: a plain request calls the upstream's ``complete``, a checked stream checks)."""
    spans = sorted((e for e in events if e[0] == "gateway"), key=lambda e: e[1])
    firsts = {e[1]: e[2] for e in events if e[0] == "first content"}
    out: dict[str, list[float]] = defaultdict(list)
    for _, start, end in spans:
        inside = [e for e in events if start <= e[1] and e[2] <= end and e[0] != "gateway"]
        names = {e[0] for e in inside}
        checked = "check" in names
        if "upstream" in names:
            found = "plain" if checked else "bare plain"
        else:
            found = "monitor" if checked else "bare stream"
        if found != kind:
            continue
        ms: dict[str, float] = defaultdict(float)
        for name, s, e in inside:
            ms[name] += (e - s) * 1000
        instruction = next((e for e in inside if e[0] == "instruction"), None)
        in_step = [e for e in inside if instruction and instruction[1] <= e[1] <= instruction[2]]
        reader = sum((e[2] - e[1]) * 1000 for e in in_step if e[0] == "reader")
        second_look = sum((e[2] - e[1]) * 1000 for e in in_step if e[0] == "judge")
        row = {
            "gateway": (end - start) * 1000,
            "first content": (firsts.get(start, end) - start) * 1000,
            "instruction step": ms["instruction"],
            "  reader pass": reader,
            "  judge pass (second look)": second_look,
            "  rest of the step (its Python, hand-offs)": ms["instruction"] - reader - second_look,
            "upstream (plain)": ms["upstream"],
            "reply check": ms["check"],
            "  judge ONNX batches": ms["onnx"]
            - sum((e[2] - e[1]) * 1000 for e in in_step if e[0] == "onnx"),
            "  tokenising, pooling": ms["judge"]
            - ms["onnx"]
            - sum((e[2] - e[1]) * 1000 for e in in_step if e[0] == "judge")
            + sum((e[2] - e[1]) * 1000 for e in in_step if e[0] == "onnx"),
            "  hand-offs (check - judge)": ms["check"]
            - ms["judge"]
            + sum((e[2] - e[1]) * 1000 for e in in_step if e[0] == "judge"),
            "record": ms["record"],
        }
        row["rest (streams: the relay too)"] = (
            row["gateway"]
            - row["instruction step"]
            - row["upstream (plain)"]
            - row["reply check"]
            - row["record"]
        )
        for key, value in row.items():
            out[key].append(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rounds = args.rounds + WARM_UP_ROUNDS
    with traced_gateways(BOOT, "vilmo-trace-", REPLY, args.baseline_tree) as run:
        trees, urls = run.trees, run.urls
        with httpx.Client(timeout=60) as client:
            for r in range(rounds):  # the warm-up rounds first, dropped below
                for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
                    for t, (_, policy, stream) in enumerate(TARGETS):
                        body = chat_body(round_prompt(r, t), stream)
                        call = timed_stream if stream else timed_post
                        call(client, urls[name], body, {"X-Vilmo-Policy": policy})
        traces = dumped_events(run, rounds * len(TARGETS))
        load = os.getloadavg()[0]
        print(
            f"per-stage medians at c=1 (ms), {args.rounds} rounds, {os.cpu_count()} CPUs, "
            f"load average {load:.1f} at the end\n"
        )
        for label, _, stream in TARGETS:
            kind = KINDS[label]
            found = {}
            for name in trees:
                per = stages(traces[name], kind)
                found[name] = {k: v[WARM_UP_ROUNDS:] for k, v in per.items()}
            paired = "baseline" in found
            columns = [*trees, *(["paired Δ"] if paired else [])]
            print(
                f"### {label}\n\n| stage | " + " | ".join(columns) + " |\n|---|"
                + "---|" * len(columns)
            )
            for key in found["this"]:
                if not stream or key != "upstream (plain)":
                    cells = [median_cell(found[n].get(key, [])) for n in trees]
                    if paired:  # this tree less the baseline's, round by round (same prompt)
                        pairs = zip(found["baseline"].get(key, []), found["this"][key],
                                    strict=False)
                        cells.append(median_cell([t - b for b, t in pairs], signed=True))
                    print(f"| {key} | " + " | ".join(cells) + " |")
            print()


if __name__ == "__main__":
    main()
