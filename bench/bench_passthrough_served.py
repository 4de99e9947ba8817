"""The served gateway's CPU per pass-through request (no policy, the direct path), this checkout
against a baseline tree, each `proxy.cli serve` on the same stub upstream (a benchmark, not a
test; issue 16): the in-process cost (``bench_passthrough_cpu``) plus the server edge and the
process's other threads. Rounds interleave the trees (order alternating), non-stream and stream
at c=32; the gateway process's CPU (``/proc``) per request, medians over rounds, ratio
after / before.

    git archive <base> | tar -x -C /tmp/base
    python bench/bench_passthrough_served.py --baseline-tree /tmp/base [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_passthrough_cpu import BARE
from bench_server_edge import cpu_seconds
from bench_serving import REPLY
from harness import ENV, stub_process, wait_ready
from stub_upstream import free_port


async def round_of(url: str, count: int, stream: bool) -> None:
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        remaining = iter(range(count))

        async def worker() -> None:
            for i in remaining:
                body = {"model": "stub", "stream": stream,
                        "messages": [{"role": "user", "content": f"Hello there ({i})."}]}
                async with client.stream("POST", "/chat/completions", json=body) as reply:
                    async for _ in reply.aiter_bytes():
                        pass
                    reply.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(32)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=480)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vilmo-passthrough-"))
    (work / "policies").mkdir()
    (work / "policies" / "bare.yaml").write_text(f"name: bare\n{BARE}")
    stub_port = free_port()
    stub = stub_process(stub_port, REPLY)
    gateways: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        wait_ready(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        for name, tree in (("this", REPO), ("base", args.baseline_tree.resolve())):
            config = work / f"{name}.yaml"
            config.write_text(
                "model_list:\n  - model_name: stub\n    litellm_params:\n"
                f"      model: openai/stub\n      api_base: http://127.0.0.1:{stub_port}/v1\n"
                f"      api_key: sk-bench\nrouter_settings: {{num_retries: 0}}\n"
                f"policy_dir: {work / 'policies'}\ndefault_policy: bare\n"
                f"store: {{path: {work / name / 'state.db'}}}\n")
            port = free_port()
            serve = (f"from proxy.cli import serve; serve(['--config', {str(config)!r}, "
                     f"'--port', '{port}'])")
            process = subprocess.Popen([sys.executable, "-c", serve],
                                       env={**ENV, "PYTHONPATH": str(tree)}, cwd=tree,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            gateways[name] = process, f"http://127.0.0.1:{port}/v1"
            wait_ready(f"http://127.0.0.1:{port}/healthz", process)
        for _, url in gateways.values():
            for stream in (False, True):
                asyncio.run(round_of(url, 64, stream))
        seen: dict[tuple[str, bool], list[float]] = {}
        for r in range(args.rounds):
            for name in (list(gateways) if r % 2 == 0 else list(gateways)[::-1]):
                process, url = gateways[name]
                for stream in (False, True):
                    cpu = cpu_seconds(process.pid)
                    asyncio.run(round_of(url, args.requests, stream))
                    used = (cpu_seconds(process.pid) - cpu) / args.requests * 1e6
                    seen.setdefault((name, stream), []).append(used)
        for stream in (False, True):
            this = statistics.median(seen[("this", stream)])
            base = statistics.median(seen[("base", stream)])
            print(f"{'stream' if stream else 'non-stream':10} c=32 gateway CPU/request: this "
                  f"{this:.0f} us, base {base:.0f} us, ratio {this / base:.3f}", flush=True)
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(timeout=20)
        stub.terminate()
        stub.wait(timeout=20)


if __name__ == "__main__":
    main()
