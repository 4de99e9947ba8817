"""vilmo against the LiteLLM proxy on one stub upstream (issue 16): one command, a Markdown
report (a benchmark, not a test).

One stub upstream on loopback answers a fixed 122-word reply (streamed word by word when
asked). The same requests go, interleaved in blocks (each round visits every target, in a
rotated order), to: the stub directly (the baseline), the LiteLLM proxy (`litellm[proxy]` in its
own virtualenv, one worker, a master key), vilmo with no policy (the direct path; and, unless
--no-router, through LiteLLM's Router: `upstream.direct: never`) and vilmo with the `default`
policy (streams in buffer and in monitor mode). Non-stream and stream, c=1 and c=32. The
judge's raw batched rate on the same inputs is measured in this process after the servers
are done. Figures are ratios to LiteLLM and to the stub measured in the same run.

    python bench/compare_litellm.py [--litellm-venv /work/litellm-venv] [--rounds 2]
        [--c1 20] [--c32 128] [--block-s 10] [--out bench/reports/compare_litellm.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from compare_report import Row, write_report
from compare_targets import ENV, REPO, Block, Server, launch, python, run_block

sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))  # first: tests/proxy must not shadow the proxy package
sys.path.insert(0, str(REPO / "bench"))
from harness import prompts
from stub_upstream import free_port

REPLY = (
    "Thank you for asking, and I am sorry that this happened to you. A calm approach usually "
    "works best. First, take some time to let the first wave of anger pass, so that you can "
    "think clearly about what you want. Then talk to the person privately and explain how "
    "their words or actions affected you, using plain statements about your own feelings "
    "rather than accusations. Listen to their side as well, because misunderstandings are "
    "common and most people respond well when they feel heard. If the problem continues, "
    "write down what happened and ask someone you both trust to help you find a fair "
    "solution. Looking after your own wellbeing matters too, so lean on friends and family "
    "while you sort things out. Small, respectful steps tend to lead to lasting peace here.")
MASTER_KEY = "sk-bench-litellm-master-0123"
BARE = "values:\n  mft.care: {}\ninstructions: {generator: none}\nchecks: {output: false}\n"


@dataclass(frozen=True)
class Variant:
    label: str
    server: str
    headers: tuple[tuple[str, str], ...] = ()
    streams_only: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    concurrency: int
    requests: int


def start_servers(args: argparse.Namespace, work: Path, litellm: Path | None,
                  servers: dict[str, Server]) -> None:
    """Stub first, then each server alone (so start-up times are not contended), into
    ``servers`` (so that an interrupted start still stops those already running)."""
    stub_port = free_port()
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import harness; "
            f"harness.serve_stub({stub_port}, {REPLY!r}, 0.0)")
    servers["stub"] = launch("stub", [python(), "-c", code], stub_port, {})
    stub_v1 = f"http://127.0.0.1:{stub_port}/v1"
    entry = (f"model_list:\n  - model_name: stub\n    litellm_params: {{model: openai/stub, "
             f"api_base: '{stub_v1}', api_key: sk-bench-upstream}}\n")
    if litellm is not None:
        (work / "litellm.yaml").write_text(
            entry + f"general_settings: {{master_key: {MASTER_KEY}}}\n"
            "litellm_settings: {telemetry: false}\n")
        port = free_port()
        env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
        servers["litellm"] = launch(
            "litellm", [str(litellm / "bin" / "litellm"), "--config", str(work / "litellm.yaml"),
                        "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            port, {"Authorization": f"Bearer {MASTER_KEY}"}, env=env, log=work / "litellm.log")
    shipped = (REPO / "vilmo" / "policies" / "default.yaml").read_text()
    gateways = {"vilmo": ("bare", "auto"), "vilmo-default": ("default", "auto")}
    if not args.no_router:
        gateways["vilmo-router"] = ("bare", "never")
    for name, (policy, direct) in gateways.items():
        policies = work / f"policies-{name}"
        policies.mkdir()
        if policy == "bare":
            (policies / "bare.yaml").write_text(f"name: bare\n{BARE}")
        else:
            (policies / "default.yaml").write_text(shipped)
            (policies / "default-monitor.yaml").write_text(
                shipped.replace("name: default", "name: default-monitor", 1)
                + "streaming: {mode: monitor}\n")
        config = work / f"{name}.yaml"
        config.write_text(entry + f"router_settings: {{num_retries: 0}}\nupstream: {{direct: "
                          f"{direct}}}\npolicy_dir: {policies}\ndefault_policy: {policy}\n"
                          f"store: {{path: {work / name / 'state.db'}}}\n")
        port = free_port()
        serve = (f"from proxy.cli import serve; serve(['--config', {str(config)!r}, "
                 f"'--port', '{port}'])")
        servers[name] = launch(name, [python(), "-c", serve], port, {}, log=work / f"{name}.log")


def variants(servers: dict[str, Server]) -> list[Variant]:
    found = [Variant("direct to stub", "stub")]
    if "litellm" in servers:
        found.append(Variant("LiteLLM proxy", "litellm",
                             (("Authorization", f"Bearer {MASTER_KEY}"),)))
    if "vilmo-router" in servers:
        found.append(Variant("vilmo, no policy, LiteLLM Router", "vilmo-router"))
    found += [Variant("vilmo, no policy", "vilmo"),
              Variant("vilmo, default (stream: buffer)", "vilmo-default"),
              Variant("vilmo, default, monitor", "vilmo-default",
                      (("X-Vilmo-Policy", "default-monitor"),), streams_only=True)]
    return found


async def measure(args: argparse.Namespace, servers: dict[str, Server],
                  ) -> dict[tuple[str, str], list[Block]]:
    scenarios = [Scenario("non-stream, c=1", False, 1, args.c1),
                 Scenario("stream, c=1", True, 1, args.c1),
                 Scenario("non-stream, c=32", False, 32, args.c32),
                 Scenario("stream, c=32", True, 32, args.c32)]
    targets = variants(servers)
    blocks: dict[tuple[str, str], list[Block]] = defaultdict(list)
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for variant in targets:  # warm-up: connections, first-call paths, model pages
            server = servers[variant.server]
            for stream in (False, True):
                bodies = [body(p, stream) for p in prompts(16)]
                await run_block(session, server, bodies, dict(variant.headers), 4)
        for round_ in range(args.rounds):
            for scenario in scenarios:
                shift = round_ % len(targets)
                for variant in targets[shift:] + targets[:shift]:
                    if variant.streams_only and not scenario.stream:
                        continue
                    bodies = [body(f"{p} [{next(counter)}]", scenario.stream)
                              for p in prompts(scenario.requests)]
                    block = await run_block(session, servers[variant.server], bodies,
                                            dict(variant.headers), scenario.concurrency,
                                            args.block_s)
                    blocks[(scenario.name, variant.label)].append(block)
            print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    return blocks


def body(prompt: str, stream: bool) -> dict[str, object]:
    return {"model": "stub", "messages": [{"role": "user", "content": prompt}],
            "stream": stream}


def judge_rate(batch: int, batches: int) -> float:
    """Replies judged per second by the `default` policy's judge, batches of ``batch`` (the
    gateway's checks on the same inputs: each prompt with the 122-word reply)."""
    from proxy.services import build_judge
    from vilmo.instruct.instructions import prompt_text
    from vilmo.judge.classifier import ScoreInput
    from vilmo.policy import load_policy
    from vilmo.verdict import rules_of

    policy = load_policy(REPO / "vilmo" / "policies" / "default.yaml")
    judge = build_judge()(policy)
    rules = list(rules_of(policy))
    items = [ScoreInput(response=REPLY, prompt=prompt_text([{"role": "user", "content": p}]))
             for p in prompts(batch * (batches + 1))]
    judge.score(items[:batch], rules)  # warm-up
    started = time.perf_counter()
    for i in range(1, batches + 1):
        judge.score(items[i * batch:(i + 1) * batch], rules)
    return batch * batches / (time.perf_counter() - started)


def rows(blocks: dict[tuple[str, str], list[Block]]) -> list[Row]:
    found = []
    for (scenario, label), runs in blocks.items():
        samples = [s for b in runs for s in b.samples]
        ok = [s.latency_ms for s in samples if s.status == 200]
        ttft = [s.ttft_ms for s in samples if s.status == 200 and s.ttft_ms is not None]
        found.append(Row(
            scenario=scenario, target=label, requests=len(samples),
            errors=sum(s.status != 200 for s in samples),
            statuses=", ".join(f"{n}×{code}" for code, n in sorted(
                Counter(s.status for s in samples if s.status != 200).items())),
            p50=statistics.median(ok) if ok else float("nan"),
            p99=statistics.quantiles(ok, n=100)[98] if len(ok) >= 2 else float("nan"),
            ttft=statistics.median(ttft) if ttft else None,
            rps=len(ok) / sum(b.wall_s for b in runs),  # answered requests only
            cpu_ms=1000 * sum(b.cpu_s for b in runs) / len(samples)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--litellm-venv", type=Path, default=Path("/work/litellm-venv"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--c1", type=int, default=20, help="requests per c=1 block")
    parser.add_argument("--c32", type=int, default=128, help="requests per c=32 block")
    parser.add_argument("--block-s", type=float, default=10.0,
                        help="no new request in a block after this many seconds")
    parser.add_argument("--judge-batches", type=int, default=8)
    parser.add_argument("--no-router", action="store_true",
                        help="leave out vilmo through LiteLLM's Router")
    parser.add_argument("--out", type=Path, default=REPO / "bench/reports/compare_litellm.md")
    args = parser.parse_args()
    litellm: Path | None = args.litellm_venv
    if litellm is None or not (litellm / "bin" / "litellm").exists():
        print(f"LiteLLM is skipped: no {args.litellm_venv}/bin/litellm (make it with: python3 -m "
              f"venv {args.litellm_venv} && {args.litellm_venv}/bin/pip install "
              "'litellm[proxy]==1.108.*')", flush=True)
        litellm = None
    work = Path(tempfile.mkdtemp(prefix="vilmo-compare-"))
    started = time.perf_counter()
    servers: dict[str, Server] = {}
    try:
        start_servers(args, work, litellm, servers)
        print("started: " + ", ".join(f"{n} {s.startup_s:.1f} s" for n, s in servers.items()),
              flush=True)
        blocks = asyncio.run(measure(args, servers))
        peaks = {n: s.peak_rss_mb() for n, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    rate = judge_rate(32, args.judge_batches)
    version = None
    if litellm is not None:
        version = subprocess.run([str(litellm / "bin" / "pip"), "show", "litellm"],
                                 check=False, capture_output=True, text=True).stdout.split("\n")[1]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"rows": [asdict(r) for r in rows(blocks)], "peak_rss_mb": peaks, "judge_rate": rate,
         "startup_s": {n: s.startup_s for n, s in servers.items()}}, indent=1))
    write_report(args.out, rows(blocks), {n: s.startup_s for n, s in servers.items()}, peaks,
                 rate, sys.argv, version, time.perf_counter() - started)
    shutil.rmtree(work, ignore_errors=True)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
