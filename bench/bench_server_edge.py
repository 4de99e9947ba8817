"""The cost of the server edge (``proxy.server``: uvicorn's protocols with its limits) against
uvicorn's plain httptools protocol (no limits), on one no-policy gateway config over the stub
upstream: the edge on httptools (``vilmo serve``'s default) and on h11.

The three gateways run at once, each its own process; the rounds interleave them (plain,
edge httptools, edge h11, plain, ...), small non-stream chat requests at c=1 and at c=32.
Prints requests per second and latency per protocol, and throughput as a ratio of plain
httptools'.

    python bench/bench_server_edge.py [--requests 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import ENV, REPO, chat_body, stub_process, wait_ready

BARE = "name: bare\nvalues:\n  mft.care: {}\ninstructions: {generator: none}\n" \
       "checks: {output: false}\n"
LAUNCH = """
import sys, uvicorn
from proxy.server import ServerConfig, serve
from proxy.settings import load_config
protocol, config_path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os; os.environ["VILMO_CONFIG"] = config_path
settings = load_config(config_path).server
app = "proxy.app:app_from_environment"
if protocol == "plain":
    uvicorn.run(app, factory=True, host="127.0.0.1", port=port, log_level="warning",
                http="httptools", timeout_keep_alive=settings.keep_alive_s)
else:
    serve(ServerConfig(app, settings, parser=protocol, factory=True, host="127.0.0.1",
                       port=port, log_level="warning"))
"""

GATEWAYS = {"plain httptools": "plain", "edge httptools": "httptools", "edge h11": "h11"}
"""Each gateway's name, and what LAUNCH runs: uvicorn alone, or ``ServerConfig`` on a parser."""


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.CalledProcessError):
        return platform.processor() or "unknown"


async def run_round(url: str, count: int, concurrency: int) -> list[float]:
    """``count`` requests, ``concurrency`` at a time on one pooled client; latencies in ms."""
    latencies: list[float] = []
    body = chat_body("Hello there, how are you?")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        remaining = iter(range(count))

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                reply = await client.post("/chat/completions", json=body)
                reply.raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per protocol and level")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from stub_upstream import free_port

    work = Path(tempfile.mkdtemp(prefix="vilmo-edge-bench-"))
    (work / "policies").mkdir()
    (work / "policies" / "bare.yaml").write_text(BARE)
    stub_port = free_port()
    config = work / "gateway.yaml"
    config.write_text(
        "model_list:\n  - model_name: stub\n    litellm_params:\n"
        f"      model: openai/stub\n      api_base: http://127.0.0.1:{stub_port}/v1\n"
        f"      api_key: sk-bench\nrouter_settings: {{num_retries: 0}}\n"
        f"policy_dir: {work / 'policies'}\ndefault_policy: bare\n"
        f"store: {{path: {work / 'state.db'}}}\n")
    stub = stub_process(stub_port, None)
    gateways: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        wait_ready(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        for protocol, launched in GATEWAYS.items():
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, launched, str(config), str(port)],
                env={**ENV, "PYTHONPATH": str(REPO)}, cwd=REPO,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            gateways[protocol] = process, f"http://127.0.0.1:{port}/v1"
            wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        per_round = max(1, args.requests // args.rounds)
        results: dict[tuple[str, int], tuple[list[float], float]] = {}
        for concurrency in (1, 32):
            for protocol, (_, url) in gateways.items():  # warm up
                asyncio.run(run_round(url, 50, concurrency))
            for _ in range(args.rounds):
                for protocol, (_, url) in gateways.items():
                    started = time.perf_counter()
                    latencies = asyncio.run(run_round(url, per_round, concurrency))
                    spent = time.perf_counter() - started
                    done, total = results.get((protocol, concurrency), ([], 0.0))
                    results[(protocol, concurrency)] = done + latencies, total + spent
        print(f"CPU: {cpu_model()}; {per_round * args.rounds} requests per protocol and "
              f"level, {args.rounds} interleaved rounds")
        for concurrency in (1, 32):
            base = None
            for protocol in gateways:
                latencies, spent = results[(protocol, concurrency)]
                rate = len(latencies) / spent
                base = base or rate
                p95 = statistics.quantiles(latencies, n=20)[18]
                print(f"c={concurrency:<3} {protocol:15} {rate:8.1f} req/s   median "
                      f"{statistics.median(latencies):7.2f} ms   p95 {p95:7.2f} ms   "
                      f"throughput {rate / base:5.2f}x plain's")
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(timeout=20)
        stub.terminate()
        stub.wait(timeout=20)


if __name__ == "__main__":
    main()
