"""A non-stream `default` request's path at c=1, stage by stage, wall and CPU (a benchmark, not a
test; issue 16).

One stub upstream (``compare_litellm.REPLY``, the 122-word reply) and `vilmo serve` of this tree,
started with clock-only marks (each reads the wall clock and its thread's CPU clock; nothing else
changes) around the stages of a `default` non-stream chat request: the instruction step, the
upstream call, the reply read for the judge, the output check (the micro-batcher's hop to its
worker, the judge's rows and tokenising, each ``_run`` of the judge: the whole reading after the
prompt and alone, then the sentence rows when the gate lets them, each ONNX Runtime run with its
thread, rows and width), the record (metrics and audit) and the response. Each round sends one
question (``harness.prompts``: distinct, so no cache answers) to the `default` policy, to a
policy with no instruction and no check, and straight to the stub.

It prints per stage the median wall ms, the median CPU ms (the stage's own threads' CPU clocks,
model runs on the side pool included), in how many requests it came, and the client's added p50
per target. With ``--baseline-tree``, a gateway of that tree too (the two visited in alternating
order each round): both trees' columns and the paired difference of the client's time.

    python bench/trace_output_check.py [--rounds 30] [--baseline-tree /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from compare_litellm import REPLY
from harness import chat_body, prompts, timed_post, traced_gateways

BOOT = r"""
import functools, inspect, json, os, signal, sys, threading, time
EVENTS = []
CURRENT = [None]  # c=1: every thread's marks belong to the request in flight
PHASE = ["other"]  # c=1: "step" while the instruction step runs, "check" while the output check
def mark(name):
    name = name.replace("{phase}", PHASE[0])
    EVENTS.append((name, time.perf_counter(), time.thread_time(), threading.get_ident(),
                   CURRENT[0]))
def phased(owner, attr, phase):
    f = getattr(owner, attr)
    async def w(*a, **k):
        PHASE[0] = phase
        try: return await f(*a, **k)
        finally: PHASE[0] = "other"
    setattr(owner, attr, functools.wraps(f)(w))
def wrap(owner, attr, name):
    f = getattr(owner, attr, None)
    if f is None: return  # absent in this tree
    if inspect.iscoroutinefunction(f):
        async def w(*a, **k):
            mark(name + " >")
            try: return await f(*a, **k)
            finally: mark(name + " <")
    else:
        def w(*a, **k):
            mark(name + " >")
            try: return f(*a, **k)
            finally: mark(name + " <")
    setattr(owner, attr, functools.wraps(f)(w))
import proxy.app, proxy.call, proxy.direct, proxy.guard, proxy.pipeline, proxy.routes
import proxy.services
import vilmo.judge.batcher as batcher, vilmo.judge.value_model as value_model
import vilmo.judge.value_onnx as value_onnx, vilmo.judge.window_rows as window_rows
wrap(proxy.pipeline, "chat", "pipeline")
wrap(proxy.guard.Guard, "instruction", "instruction step")
wrap(proxy.direct.DirectUpstream, "complete", "upstream")
wrap(proxy.call.Call, "checked_choices", "reply read for the judge")
wrap(proxy.guard.Guard, "check_choices", "output check")
wrap(batcher.MicroBatcher, "_execute", "check: batcher's batch")
wrap(value_model.BuiltinClassifier, "score", "{phase}: judge (worker thread)")
wrap(value_model.BuiltinClassifier, "_rows", "{phase}: judge: rows (tokenise, windows)")
wrap(value_model.BuiltinClassifier, "_run", "{phase}: judge: run of rows")
wrap(window_rows, "pooled_spans", "{phase}: judge: pooled spans")
wrap(window_rows, "ranked_spans", "{phase}: judge: gate and rank spans")
wrap(value_model.BuiltinClassifier, "_span_scores", "{phase}: judge: span scores")
wrap(proxy.services.Services, "finish", "record (metrics, audit)")
phased(proxy.guard.Guard, "instruction", "step")
phased(proxy.guard.Guard, "check_choices", "check")
JUDGING = [0]  # a model run inside the judge's score (its own or a side pool thread's)
orig_score = value_model.BuiltinClassifier.score
def score(*a, **k):
    JUDGING[0] += 1
    try: return orig_score(*a, **k)
    finally: JUDGING[0] -= 1
value_model.BuiltinClassifier.score = score
orig_run = value_onnx.Int8Session.graph_outputs
def graph_outputs(self, ids, mask):
    name = "{phase}: judge: model run" if JUDGING[0] else "{phase}: model run"
    mark(f"{name} >")
    try: return orig_run(self, ids, mask)
    finally:
        mark(f"{name} <")
        SHAPES.append((CURRENT[0], name.replace("{phase}", PHASE[0]), list(ids.shape)))
value_onnx.Int8Session.graph_outputs = graph_outputs
SHAPES = []
factory = proxy.app.app_from_environment
COUNT = [0]
def traced():
    app = factory()
    async def asgi(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await app(scope, receive, send)
        CURRENT[0] = COUNT[0]; COUNT[0] += 1
        mark("request")
        async def sending(message):
            if message["type"] == "http.response.start":
                mark("response headers")
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                mark("response body")
            await send(message)
        try: await app(scope, receive, sending)
        finally: mark("end")
    asgi.state = app.state
    return asgi
proxy.app.app_from_environment = traced
signal.signal(signal.SIGUSR1, lambda *_: open(os.environ["TRACE_OUT"], "w").write(
    json.dumps({"events": EVENTS, "shapes": SHAPES})))
from vilmo.cli import main
sys.argv = ["vilmo", *sys.argv[1:]]
main()
"""
TARGETS = {"default": "default", "no policy": "passthrough"}
Mark = tuple[str, float, float, int]


def by_request(events: list[tuple[str, float, float, int, int | None]]) -> list[list[Mark]]:
    """Each request's marks (name, wall, thread CPU, thread), in request order."""
    out: dict[int, list[Mark]] = defaultdict(list)
    for name, wall, cpu, thread, request in events:
        if request is not None:
            out[request].append((name, wall, cpu, thread))
    return [out[n] for n in sorted(out)]


def stages(marks: list[Mark]) -> dict[str, tuple[float, float, int]]:
    """Per stage of one request: wall ms (first start to last end), CPU ms (summed over its
    spans, each on its own thread) and how many spans."""
    opened: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    found: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for name, wall, cpu, thread in marks:
        if name.endswith(" >"):
            opened[(name[:-2], thread)].append((wall, cpu))
        elif name.endswith(" <") and opened[(name[:-2], thread)]:
            w0, c0 = opened[(name[:-2], thread)].pop()
            found[name[:-2]].append((w0, wall, cpu - c0))
    out = {name: ((max(e for _, e, _ in s) - min(b for b, _, _ in s)) * 1000,
                  sum(c for _, _, c in s) * 1000, len(s)) for name, s in found.items()}
    first = marks[0][1]
    for point in ("response headers", "response body", "end"):
        at = [wall for name, wall, _, _ in marks if name == point]
        if at:
            out[f"at {point} (since the request's first byte)"] = ((at[0] - first) * 1000, 0, 1)
    check = [m for m in marks if m[0].startswith("output check")]
    runs = [m for m in marks if m[0].startswith("check: judge: model run")]
    if check and runs:  # the check's wall time outside any model run (hops, Python, numpy)
        inside = _union([(b, e) for b, e, _ in _spans(runs)])
        outer = (check[0][1], check[-1][1])
        busy = sum(max(0.0, min(e, outer[1]) - max(b, outer[0])) for b, e in inside)
        out["output check: wall outside model runs"] = ((outer[1] - outer[0] - busy) * 1000, 0, 1)
        out["check: model runs, wall of their union (both cores: < the sum)"] = (
            sum(e - b for b, e in inside) * 1000, 0, 1)
        out["check: model runs, sum of their walls"] = (
            sum(e - b for b, e, _ in _spans(runs)) * 1000, 0, 1)
        threads = {thread for _, _, _, thread in runs}
        out[f"check: model runs on {len(threads)} thread(s)"] = (0, 0, 1)
    return out


def _spans(marks: list[Mark]) -> list[tuple[float, float, float]]:
    opened: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    out = []
    for name, wall, cpu, thread in marks:
        if name.endswith(" >"):
            opened[(name[:-2], thread)].append((wall, cpu))
        elif opened[(name[:-2], thread)]:
            w0, c0 = opened[(name[:-2], thread)].pop()
            out.append((w0, wall, cpu - c0))
    return out


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for b, e in sorted(spans):
        if out and b <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((b, e))
    return out


def table(requests: list[list[Mark]]) -> dict[str, tuple[float, float, int]]:
    per: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for marks in requests:
        for name, row in stages(marks).items():
            per[name].append(row)
    return {name: (statistics.median(w for w, _, _ in rows),
                   statistics.median(c for _, c, _ in rows), len(rows))
            for name, rows in per.items()}


def marks_since(requests: list[list[Mark]]) -> list[tuple[str, float, int]]:
    """Per mark, its median ms since the request's first mark (its first time in each
    request) and in how many requests it came, in the order of the medians."""
    since: dict[str, list[float]] = defaultdict(list)
    for marks in requests:
        seen: set[str] = set()
        for name, wall, _, _ in marks:
            if name not in seen:
                seen.add(name)
                since[name].append((wall - marks[0][1]) * 1000)
    rows = [(name, statistics.median(ms), len(ms)) for name, ms in since.items()]
    return sorted(rows, key=lambda row: row[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--baseline-tree", type=Path)
    args = parser.parse_args()
    client_ms: dict[tuple[str, str], list[float]] = defaultdict(list)
    with traced_gateways(BOOT, "vilmo-output-check-", REPLY, args.baseline_tree) as run:
        work, direct, trees, urls = run.work, run.direct, run.trees, run.urls
        with httpx.Client(timeout=60) as client:
            for r, question in enumerate(prompts(args.rounds + 3)):  # 3 warm-up rounds
                stub_ms = timed_post(client, direct, chat_body(question), {})
                for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
                    for label, policy in TARGETS.items():
                        text = question.replace("(case", f"({policy} case")
                        ms = timed_post(client, urls[name], chat_body(text),
                                        {"X-Vilmo-Policy": policy})
                        if r >= 3:
                            client_ms[(label, name)].append(ms - stub_ms)
        run.dump_traces()
        found, timeline, shapes, counts = {}, {}, {}, {}
        for name in trees:
            trace = json.loads((work / f"{name}.json").read_text())
            requests = by_request(trace["events"])
            chosen = [m for m in requests[len(TARGETS) * 3:]
                      if any(n.startswith("output check") for n, *_ in m)]
            found[name] = table(chosen)
            counts[name] = len(chosen)
            timeline[name] = marks_since(chosen)
            shapes[name] = Counter(f"{kind} {rows}x{width}" for request, kind, (rows, width, *_)
                                   in trace["shapes"] if request is not None
                                   and request >= len(TARGETS) * 3)
        load = os.getloadavg()
        print(f"non-stream `default` requests at c=1, {args.rounds} rounds, {os.cpu_count()} "
              f"CPUs, load average {load[0]:.1f} / {load[1]:.1f} at the end; medians per "
              "request (wall ms: a stage's first start to its last end; CPU ms: its threads' "
              "CPU clocks summed)\n")
        columns = list(trees)
        print("| stage | " + " | ".join(f"{n}: wall, CPU (requests)" for n in columns)
              + " |\n|---|" + "---|" * len(columns))
        names = sorted({n for t in found.values() for n in t},
                       key=lambda n: min(found[c][n][0] if n in found[c] else 1e9
                                         for c in columns) if n.startswith("at ") else -1)
        order = [n for n in names if not n.startswith("at ")] + [n for n in names
                                                                  if n.startswith("at ")]
        for stage in order:
            cells = [f"{found[c][stage][0]:.2f}, {found[c][stage][1]:.2f} "
                     f"({found[c][stage][2]})" if stage in found[c] else "" for c in columns]
            print(f"| {stage} | " + " | ".join(cells) + " |")
        for name in columns:
            print(f"\n{name}: model runs (batches, rows x tokens) over the {counts[name]} "
                  "requests: " + ", ".join(f"{k}: {n}" for k, n in sorted(shapes[name].items())))
            print(f"\n| {name}: mark | median wall ms since the request's first byte | "
                  "requests |\n|---|---|---|")
            for mark, ms, count in timeline[name]:
                print(f"| {mark} | {ms:.2f} | {count} |")
        paired = "baseline" in trees
        print("\n| client, added to the stub's (same round), p50 ms | " + " | ".join(columns)
              + (" | paired Δ |" if paired else " |") + "\n|---|" + "---|" * len(columns)
              + ("---|" if paired else ""))
        for label in TARGETS:
            cells = [f"{statistics.median(client_ms[(label, n)]):.2f}" for n in columns]
            if paired:
                cells.append(f"{statistics.median(t - b for b, t in zip(client_ms[(label, 'baseline')], client_ms[(label, 'this')], strict=True)):+.2f}")
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
