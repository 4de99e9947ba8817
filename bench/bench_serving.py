"""Serving cost of the `default` policy, this checkout against a baseline tree, in one run
(a benchmark, not a test).

One stub upstream (a reply of about 150 tokens) and two gateways in front of it, one per source
tree, each with its own ONNX cache; blocks of requests alternate between the gateways (and the
stub alone, for the added latency), so a slow spell of a shared machine hits both. Reported per
gateway: start-up time, added p50/p99 latency at c=1, req/s at c=32, CPU ms per request (the
gateway process's user+system time over its requests), peak RSS, and whether the process
imported torch. Usage (the baseline tree made with `git archive main | tar -x -C /tmp/base`):

    python bench/bench_serving.py --baseline-tree /tmp/base [--requests 60] [--blocks 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from harness import REPO, chat_body, prompts, serve_stub, start_tree, wait_ready  # noqa: F401

REPLY = ("Here is a practical plan. First, talk to them calmly and explain how the situation "
         "affected you, using specific examples rather than general accusations. Second, "
         "listen to their side, because there may be a misunderstanding you did not see. "
         "Third, agree on one concrete change each of you will make, and write it down so "
         "you both remember it. If the problem continues, involve someone neutral whom you "
         "both trust, such as a mediator or a manager. Keep records of what happens, stay "
         "polite, and take care of yourself: a walk, a good night's sleep and time with "
         "friends make hard conversations easier.")


@dataclass
class Gateway:
    name: str
    tree: Path
    cache: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    c1: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    ok_rates: list[float] = field(default_factory=list)
    """Answered (200) requests per second at c=32: a fast 503 is not throughput."""
    cpu_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    """Status -> count of failed requests at c=32 (a 503: a check ran past its timeout)."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(gateway: Gateway, config: Path, port: int) -> None:
    started = time.perf_counter()
    gateway.process = start_tree(gateway.tree, config, port, gateway.cache)
    gateway.startup_s = time.perf_counter() - started
    gateway.url = f"http://127.0.0.1:{port}/v1"


def imported_torch(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps


async def concurrent(g: Gateway, texts: list[str], headers: dict[str, str], c: int) -> float:
    """Requests per second (all answers); answered ones per second go to ``g.ok_rates``."""
    queue = list(texts)
    failed = sum(g.errors.values())
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=c)) as client:
        async def worker() -> None:
            while queue:
                body = chat_body(queue.pop())
                reply = await client.post(f"{g.url}/chat/completions", json=body,
                                          headers=headers)
                if reply.status_code != 200:  # "503 overloaded": refused at once, no timeout
                    key = f"{reply.status_code}{' overloaded' * ('overloaded' in reply.text)}"
                    g.errors[key] = g.errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        seconds = time.perf_counter() - started
        g.ok_rates.append((len(texts) - (sum(g.errors.values()) - failed)) / seconds)
        return len(texts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=60, help="per block and gateway, c=1")
    parser.add_argument("--concurrent", type=int, default=160, help="per block, c=32")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--caches", type=Path, default=None,
                        help="keep each tree's ONNX cache here (else a temp dir: rebuilt)")
    args = parser.parse_args()
    from stub_upstream import free_port

    work = Path(tempfile.mkdtemp(prefix="vilmo-bench-serving-"))
    caches = args.caches or work
    gateways = [Gateway("baseline", args.baseline_tree.resolve(), caches / "baseline"),
                Gateway("this", REPO, caches / "this")]
    stub_port = free_port()
    stub_code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import harness; "
                 f"harness.serve_stub({stub_port}, {REPLY!r}, 0.0)")
    stub = subprocess.Popen([sys.executable, "-c", stub_code])
    headers = {"X-Vilmo-Policy": "default"}
    try:
        wait_ready(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        direct = f"http://127.0.0.1:{stub_port}/v1"
        for g in gateways:  # build each tree's graphs first: start-up is then a warm start
            warm = {**os.environ, "PYTHONPATH": str(g.tree), "VILMO_CACHE_DIR": str(g.cache)}
            subprocess.run([sys.executable, "-c", WARM], env=warm, cwd=g.tree, check=True)
            config = work / f"{g.name}.yaml"
            config.write_text(
                "model_list:\n  - model_name: stub\n    litellm_params:\n"
                f"      model: openai/stub\n      api_base: {direct}\n      api_key: sk-bench\n"
                "router_settings: {num_retries: 0}\n"
                f"store: {{path: {work / g.name / 'state.db'}}}\n")  # no cache from past runs
            start(g, config, free_port())
        direct_c1: list[float] = []
        raw: list[float] = []
        texts = prompts(args.blocks * (args.requests * 3 + args.concurrent * 2 + 40))
        with httpx.Client(timeout=60) as client:
            for g in gateways:  # first-call paths
                for t in texts[:20]:
                    client.post(f"{g.url}/chat/completions", json=chat_body(t + f" warm {g.name}"),
                                headers=headers).raise_for_status()
            at = 0
            for block in range(args.blocks):
                order = gateways if block % 2 == 0 else gateways[::-1]
                for g in order:
                    assert g.process is not None
                    cpu = cpu_seconds(g.process.pid)
                    for _ in range(args.requests):
                        text, at = texts[at], at + 1
                        t0 = time.perf_counter()
                        client.post(f"{direct}/chat/completions",
                                    json=chat_body(text)).raise_for_status()
                        t1 = time.perf_counter()
                        client.post(f"{g.url}/chat/completions", json=chat_body(text),
                                    headers=headers).raise_for_status()
                        t2 = time.perf_counter()
                        direct_c1.append((t1 - t0) * 1000)
                        g.c1.append((t2 - t1) * 1000)
                    batch, at = texts[at:at + args.concurrent], at + args.concurrent
                    g.rates.append(asyncio.run(concurrent(g, batch, headers, 32)))
                    g.cpu_ms.append((cpu_seconds(g.process.pid) - cpu) * 1000
                                    / (args.requests + args.concurrent))
                raw.append(raw_rate(gateways[1], texts[at:at + 32]))
        base = statistics.median(direct_c1)
        report: dict[str, object] = {"cpu": _cpu_name(), "cores": os.cpu_count(),
                                     "direct_p50_ms": round(base, 2), "blocks": args.blocks,
                                     "judge_raw_checks_per_s": [round(r, 1) for r in raw]}
        for g in gateways:
            assert g.process is not None
            report[g.name] = {
                "startup_s": round(g.startup_s, 1),
                "added_p50_ms_c1": round(statistics.median(g.c1) - base, 1),
                "added_p99_ms_c1": round(statistics.quantiles(g.c1, n=100)[98] - base, 1),
                "req_per_s_c32": [round(r, 1) for r in g.rates],
                "answered_per_s_c32": [round(r, 1) for r in g.ok_rates],
                "cpu_ms_per_request": [round(c, 1) for c in g.cpu_ms],
                "errors_c32": g.errors,
                "peak_rss_mb": round(peak_rss_mb(g.process.pid)),
                "torch_loaded": imported_torch(g.process.pid)}
        print(json.dumps(report, indent=1))
    finally:
        for g in gateways:
            if g.process is not None:
                g.process.terminate()
                g.process.wait(timeout=20)
        stub.terminate()
        stub.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def raw_rate(g: Gateway, prompts_: list[str]) -> float:
    """The judge's raw batched rate on the same inputs (the prompts, the stub's reply): checks
    per second of one ``score`` call on 32 of them, one ONNX thread (as the gateway runs it),
    in a process of its own, between the gateways' blocks."""
    env = {**os.environ, "PYTHONPATH": str(g.tree), "VILMO_CACHE_DIR": str(g.cache)}
    out = subprocess.run([sys.executable, "-c", RAW, json.dumps([REPLY, prompts_])], env=env,
                         cwd=g.tree, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


RAW = """
import json, sys, time
from vilmo.judge.classifier import ScoreInput
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.policy import load_policy
from vilmo.verdict import rules_of
reply, prompts = json.loads(sys.argv[1])
judge = BuiltinClassifier(cache_size=0)
ids = list(rules_of(load_policy("vilmo/policies/default.yaml")))
judge.score([ScoreInput(reply, "warm")], ids)
started = time.perf_counter()
judge.score([ScoreInput(reply, p) for p in prompts], ids)
print(len(prompts) / (time.perf_counter() - started))
"""

WARM = """
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.embedder import Int8Embedder
BuiltinClassifier().config
Int8Embedder().warm_up()
try:
    from vilmo.judge.embedder import OnnxEmbedder
    OnnxEmbedder(quantized=False).warm_up()
except ImportError:
    pass
"""
"""What `vilmo warmup` does, written so that a tree from before the command runs it too."""


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
