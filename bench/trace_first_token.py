"""A stream's path to its first token, as a timeline, at c=1 (a benchmark, not a test; issue 16).

One stub upstream and `vilmo serve` of this tree, started with clock-only marks (each mark reads
the clock; nothing else changes) at the entry and exit of the steps between a request's first
byte reaching the app and its first content chunk leaving it: the middleware, the body read and
validation, the pipeline, the instruction step (its cache lookup, the request reader's halves, the
second look, the retrieval), the upstream call (the direct path's request, the response's head,
its first chunk), the response's headers and the first content. Each round sends one question as
a `default`-policy monitor-mode stream, as a stream with no policy, and straight to the stub. It
prints, per kind of request, each mark's median milliseconds since the request's first byte
(medians of different marks do not add: the second look and the embedding half run for some
prompts only), the instruction step's median per kind of request (which passes it ran), and
the client's time to the first content chunk per target. With ``--baseline-tree``, a gateway of
that tree too (each round visits the two in alternating order): the step's medians of both, and
the paired difference of the client's first content chunk (this tree less the baseline, round
by round: the same question). The step's parts: its model runs (ONNX Runtime), the judge's own
work around its runs (the second look's tokenising, windows and pooling) and the rest (the
step's Python and numpy).

``--everyday`` sends the everyday dev prompts instead of the grievance questions (which pass the
distress detector's prefilter, so nearly all run the reader's embedding half, and many land in
the second look's band). ``--block N`` sends N requests in a row to each target, as ``compare_litellm.py``'s c=1 blocks
do (the next starts as the last ends, so it meets the last one's background work: its cache
writes, its audit record). ``--cpu``: the gateway's marks read its main thread's CPU clock
instead of the wall clock; on a shared machine the wall time stretches with the load, the CPU
time much less (a step run in a worker thread reads that thread's clock; the client's times
stay wall times).

    python bench/trace_first_token.py [--rounds 60] [--block 4] [--cpu] [--baseline-tree /tmp/base]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from importlib import resources
from pathlib import Path

import httpx
from bench_serving import REPLY
from harness import (
    ENV,
    chat_body,
    prompts,
    timed_stream,
    traced_gateways,
)

BOOT = r"""
import contextvars, functools, inspect, itertools, json, os, re, signal, sys, time
EVENTS = []
REQUEST = contextvars.ContextVar("request", default=None)  # marks go to their own request's
NUMBERS = itertools.count()
CLOCK = time.thread_time if os.environ.get("TRACE_CLOCK") == "thread" else time.perf_counter
def mark(name): EVENTS.append((name, CLOCK(), REQUEST.get()))
def wrap(owner, attr, name):
    f = getattr(owner, attr, None)
    if f is None: return  # absent in this tree
    if inspect.isasyncgenfunction(f):
        async def w(*a, **k):
            mark(name + " >")
            first = True
            async for item in f(*a, **k):
                if first: mark(name + " <"); first = False
                yield item
    elif inspect.iscoroutinefunction(f):
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
import proxy.app, proxy.caches, proxy.call, proxy.direct, proxy.guard, proxy.middleware
import proxy.pipeline, proxy.routes
import vilmo.instruct.candidates as candidates, vilmo.instruct.generator as generator
import vilmo.instruct.second_look as second_look, vilmo.instruct.stakes_reader as reader
import vilmo.judge.value_model as value_model, vilmo.judge.value_onnx as value_onnx
wrap(proxy.middleware.KeyAuth, "__call__", "middleware: key")
wrap(proxy.routes, "caller_of", "route")
wrap(proxy.routes, "read_json", "body read")
wrap(proxy.routes, "validate", "validation")
wrap(proxy.pipeline, "chat", "pipeline")
wrap(proxy.guard.Guard, "instruction", "step")
wrap(proxy.guard.Guard, "_step_in_thread", "step: in a thread")
wrap(proxy.caches.StoreCache, "get", "step: cache lookup")
wrap(generator.VilmoGenerator, "choose", "step: choose")
wrap(reader.StakesReader, "_read_half", "step: reader, first half")
wrap(reader.StakesReader, "_embed_rest", "step: reader, embedding half")
wrap(second_look.SecondLook, "values_at_stake", "step: second look")
wrap(candidates.Retriever, "retrieve", "step: retrieval")
wrap(value_model.BuiltinClassifier, "score", "judge")
wrap(value_onnx.Int8Session, "graph_outputs", "model run")
wrap(proxy.call.Call, "params", "upstream params")
wrap(proxy.direct.DirectUpstream, "stream", "upstream stream")
wrap(proxy.direct.DirectUpstream, "send", "upstream: head")
factory = proxy.app.app_from_environment
def traced():
    app = factory()
    async def asgi(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            return await app(scope, receive, send)
        REQUEST.set(next(NUMBERS))
        mark("request")
        first = []
        async def sending(message):
            if message["type"] == "http.response.start":
                mark("response headers")
            elif not first and re.search(rb'"content": ?"[^"]', message.get("body", b"")):
                mark("first content")
                first.append(True)
            await send(message)
        try: await app(scope, receive, sending)
        finally: mark("end")
    asgi.state = app.state
    return asgi
proxy.app.app_from_environment = traced
signal.signal(signal.SIGUSR1, lambda *_: open(os.environ["TRACE_OUT"], "w").write(json.dumps(EVENTS)))
from vilmo.cli import main
sys.argv = ["vilmo", *sys.argv[1:]]
main()
"""
TARGETS = {"default monitor": "default-monitor", "no policy": "passthrough"}


def timelines(events: list[tuple[str, float, int | None]]) -> list[list[tuple[str, float]]]:
    """The marks of each request, in order (a request's tail may overlap the next one's
    start: the client sends it once the stream's last bytes are in)."""
    by_request: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for name, at, request in events:
        if request is not None:
            by_request[request].append((name, at))
    return [by_request[n] for n in sorted(by_request)]


def medians(requests: list[list[tuple[str, float]]]) -> list[tuple[str, float, int]]:
    """Per mark: its median milliseconds since the request's first mark (a mark's first time
    in each request), and in how many requests it came; in the order of the medians."""
    since: dict[str, list[float]] = defaultdict(list)
    for marks in requests:
        start, seen = marks[0][1], set()
        for name, at in marks:
            if name not in seen:
                seen.add(name)
                since[name].append((at - start) * 1000)
    rows = [(name, statistics.median(ms), len(ms)) for name, ms in since.items()]
    return sorted(rows, key=lambda row: row[1])


def kinds(requests: list[list[tuple[str, float]]]) -> dict[str, list[list[tuple[str, float]]]]:
    """The requests by kind: no policy, and `default` monitor streams by which passes their
    instruction step ran (the reader's embedding half: a value at stake; the second look)."""
    out: dict[str, list[list[tuple[str, float]]]] = defaultdict(list)
    for marks in requests:
        names = {name for name, _ in marks}
        if "step: choose >" not in names:
            out["no policy"].append(marks)
            continue
        passes = [part for mark, part in (("step: in a thread >", "in a thread"),
                                          ("step: reader, embedding half >", "embedding half"),
                                          ("step: second look >", "second look"))
                  if mark in names]
        out["default monitor"].append(marks)
        out[f"  monitor, reader{''.join(' + ' + p for p in passes)}"].append(marks)
    return out


def questions(count: int, everyday: bool) -> list[str]:
    """The grievance questions (``harness.prompts``), or the everyday dev prompts, cycled, each
    with its own "(case n)" so that no cache answers one."""
    if not everyday:
        return prompts(count)
    folder = resources.files("vilmo").joinpath("data", "prompts")
    rows = [json.loads(line) for line in folder.joinpath("everyday.jsonl").read_text(
        "utf-8").splitlines() if line.strip()]
    dev = [row["prompt"] for row in rows if row["split"] == "dev"]
    return [f"{dev[i % len(dev)]} (case {i})" for i in range(count)]


def spans(marks: list[tuple[str, float]], name: str) -> list[tuple[float, float]]:
    """The (start, end) of each ``name >`` ... ``name <`` pair of one request, in order."""
    found, opened = [], []
    for mark, at in marks:
        if mark == name + " >":
            opened.append(at)
        elif mark == name + " <" and opened:
            found.append((opened.pop(), at))
    return found


def inside(inner: list[tuple[float, float]], outer: list[tuple[float, float]]) -> float:
    """Seconds of the ``inner`` spans that fall within the ``outer`` ones."""
    return sum(max(0.0, min(b, d) - max(a, c)) for a, b in inner for c, d in outer)


def step_split(marks: list[tuple[str, float]]) -> tuple[float, float, float, float]:
    """One request's instruction step in ms: whole, its model runs (ONNX Runtime), the judge's
    own work around its runs (the second look), and the rest (the step's Python and numpy)."""
    step, runs, judge = (spans(marks, n) for n in ("step", "model run", "judge"))
    whole = sum(b - a for a, b in step)
    model = inside(runs, step)
    judged = inside(judge, step) - inside(runs, judge)
    return whole * 1000, model * 1000, judged * 1000, (whole - model - judged) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--block", type=int, default=1,
                        help="requests in a row to each target, as compare_litellm.py's c=1 "
                             "blocks send them (the next one starts as the last one ends)")
    parser.add_argument("--cpu", action="store_true",
                        help="the gateway's marks read its main thread's CPU clock, not the "
                             "wall clock (on a busy shared machine the wall time stretches with "
                             "the load; the client's times stay wall times)")
    parser.add_argument("--everyday", action="store_true",
                        help="send the everyday dev prompts (vilmo/data/prompts/everyday.jsonl), "
                             "not the grievance questions: most of them run the reader's first "
                             "half alone")
    parser.add_argument("--baseline-tree", type=Path,
                        help="also serve this tree, visited in alternating order each round; "
                             "a last column gives the median of this tree's time less its, "
                             "round by round")
    args = parser.parse_args()
    if args.cpu:
        ENV["TRACE_CLOCK"] = "thread"
    client_ms: dict[tuple[str, str], list[float]] = defaultdict(list)
    with traced_gateways(BOOT, "vilmo-first-token-", REPLY, args.baseline_tree) as run:
        work, direct, trees, urls = run.work, run.direct, run.trees, run.urls
        with httpx.Client(timeout=60) as client:
            for r, question in enumerate(questions(args.rounds + 3, args.everyday)):  # 3 warm-up
                for name in list(urls) if r % 2 == 0 else list(urls)[::-1]:
                    for label, policy in TARGETS.items():
                        for k in range(args.block):
                            text = question.replace("(case", f"({policy} case"
                                                    + (f" {k}" if k else ""))
                            first, _ = timed_stream(client, urls[name], chat_body(text, True),
                                                    {"X-Vilmo-Policy": policy})
                            if r >= 3:
                                client_ms[(label, name)].append(first)
                for k in range(args.block):
                    first, _ = timed_stream(client, direct, chat_body(question, True), {})
                    if r >= 3:
                        client_ms[("straight to the stub", "")].append(first)
        run.dump_traces()
        found = {}
        for name in trees:
            events = [(str(n), float(t), r) for n, t, r in json.loads(
                (work / f"{name}.json").read_text())]
            # the streams sent (not the start-up's own warm-up), less the warm-up rounds
            requests = [r for r in timelines(events) if any(n == "first content" for n, _ in r)]
            found[name] = kinds(requests[len(TARGETS) * 3 * args.block:])
        load = os.getloadavg()[0]
        clock = "CPU ms of the gateway's main thread" if args.cpu else "ms"
        print(f"first-token timeline at c=1, {args.rounds} rounds of {args.block} request(s) "
              f"in a row per target, {os.cpu_count()} CPUs, load average {load:.1f} at the end; "
              f"{clock} since the request's first byte reached the app (medians), this tree\n")
        for label in ("default monitor", "no policy"):
            chosen = found["this"][label]
            print(f"### {label} ({len(chosen)} requests)\n\n| mark | ms | requests |\n|---|---|---|")
            for name, ms, count in medians(chosen):
                print(f"| {name} | {ms:.2f} | {count} |")
            print()
        columns = list(trees)
        print("| instruction step (step > to step <), median ms | requests | "
              + " | ".join(columns) + " |\n|---|---|" + "---|" * len(columns))
        for kind in sorted(found["this"]):
            steps = {name: [dict(m)["step <"] - dict(m)["step >"] for m in found[name][kind]
                            if "step >" in dict(m)] for name in trees}
            cells = [f"{statistics.median(steps[n]) * 1000:.2f}" if steps[n] else "" for n in trees]
            print(f"| {kind} | {len(found['this'][kind])} | " + " | ".join(cells) + " |")
        print("\n| the step's parts, medians of each request's ms | "
              + " | ".join(f"{n}: whole, model runs, judge's own, rest" for n in trees)
              + " |\n|---|" + "---|" * len(columns))
        for kind in sorted(k for k in found["this"] if k != "no policy"):
            cells = []
            for n in trees:
                parts = list(zip(*(step_split(m) for m in found[n][kind]), strict=True))
                cells.append(", ".join(f"{statistics.median(p):.2f}" for p in parts)
                             if parts else "")
            print(f"| {kind} | " + " | ".join(cells) + " |")
        paired = "baseline" in trees
        in_app = {(label, name): [(dict(m)["first content"] - m[0][1]) * 1000
                                  for m in found[name][label]]
                  for label in ("default monitor", "no policy") for name in trees}
        in_app.update({("default monitor less no policy, same round", name): [
            a - b for a, b in zip(in_app[("default monitor", name)],
                                  in_app[("no policy", name)], strict=True)] for name in trees})
        print("\n| in the app: first content since the first byte, median ms | "
              + " | ".join(columns) + (" | paired Δ |" if paired else " |") + "\n|---|"
              + "---|" * len(columns) + ("---|" if paired else ""))
        for label in dict.fromkeys(label for label, _ in in_app):
            cells = [f"{statistics.median(in_app[(label, n)]):.2f}" for n in trees]
            if paired:
                cells.append(f"{statistics.median(t - b for b, t in zip(in_app[(label, 'baseline')], in_app[(label, 'this')], strict=True)):+.2f}")
            print(f"| {label} | " + " | ".join(cells) + " |")
        stub_first = client_ms[("straight to the stub", "")]
        print("\n| client's first content chunk, median ms (added: less the stub's, same round) | "
              + " | ".join(columns) + (" | paired Δ |" if paired else " |") + "\n|---|"
              + "---|" * len(columns) + ("---|" if paired else ""))
        for label in TARGETS:
            cells = [f"{statistics.median(client_ms[(label, n)]):.2f} (added "
                     f"{statistics.median(t - s for t, s in zip(client_ms[(label, n)], stub_first, strict=True)):.2f})"
                     for n in trees]
            if paired:  # this tree less the baseline's, round by round (the same question)
                pairs = zip(client_ms[(label, "baseline")], client_ms[(label, "this")],
                            strict=True)
                cells.append(f"{statistics.median(t - b for b, t in pairs):+.2f}")
            print(f"| {label} | " + " | ".join(cells) + " |")
        print(f"| straight to the stub | {statistics.median(stub_first):.2f} |")


if __name__ == "__main__":
    main()
