"""Latency the gateway adds over calling the upstream directly (a benchmark, not a test).

Starts the stub upstream and `vilmo serve` as separate processes on loopback, then sends the
same requests alternately straight to the stub (the baseline, measured in the same run) and
through the gateway: with the default policy (relevance instruction: one prompt embedding per
request) and with a policy that injects nothing (the proxy path alone). Prompts are distinct so
the embedding cache does not hide the encoder's cost. Prints medians, p95 and the added time.

    python bench/bench_gateway.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

SUBJECTS = ["my neighbour", "a coworker", "my sister", "a stranger online", "my landlord",
            "the referee", "my teacher", "a customer", "my best friend", "the new intern"]
ACTS = ["insulted me", "lied to me", "took my parking spot", "copied my work",
        "ignored my messages", "spread a rumour about me", "broke my bike",
        "laughed at my accent", "read my diary", "cheated at cards"]


def prompts(n: int) -> list[str]:
    return [f"{SUBJECTS[i % 10]} {ACTS[(i // 10) % 10]} (case {i}). What should I do?"
            for i in range(n)]


def serve_stub(port: int) -> None:
    from stub_upstream import StubUpstream

    import uvicorn
    uvicorn.run(StubUpstream().app(), host="127.0.0.1", port=port, log_level="warning")


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def timed(send: Callable[[], None]) -> float:
    started = time.perf_counter()
    send()
    return (time.perf_counter() - started) * 1000


def chat(client: httpx.Client, base: str, prompt: str, policy: str | None = None,
         stream: bool = False) -> Callable[[], None]:
    body = {"model": "stub", "messages": [{"role": "user", "content": prompt}], "stream": stream}
    headers = {"X-Vilmo-Policy": policy} if policy else {}

    def send() -> None:
        if stream:  # time to the first content chunk
            with client.stream("POST", f"{base}/chat/completions", json=body,
                               headers=headers) as response:
                for line in response.iter_lines():
                    if '"content":"' in line.replace(" ", "") and '"content":""' not in line:
                        break
                response.close()
        else:
            client.post(f"{base}/chat/completions", json=body, headers=headers
                        ).raise_for_status()

    return send


def summary(name: str, samples: list[float], baseline: list[float] | None) -> str:
    median = statistics.median(samples)
    p95 = statistics.quantiles(samples, n=20)[18]
    line = f"{name:44} median {median:7.2f} ms   p95 {p95:7.2f} ms"
    if baseline:
        base = statistics.median(baseline)
        line += f"   added {median - base:+6.2f} ms   ratio {median / base:5.2f}x"
    return line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub)
        return
    from stub_upstream import free_port

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    stub_port, gateway_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="vilmo-bench-"))
    shutil.copytree(REPO / "policies", work / "policies")
    (work / "policies" / "bare.yaml").write_text(
        "name: bare\nvalues:\n  mft.care: {}\ninstructions: {generator: none}\n")
    (work / "gateway.yaml").write_text(
        "model_list:\n  - model_name: stub\n    litellm_params:\n"
        f"      model: openai/stub\n      api_base: http://127.0.0.1:{stub_port}/v1\n"
        "      api_key: sk-bench\nrouter_settings: {num_retries: 0}\n"
        f"policy_dir: {work / 'policies'}\n")
    stub = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(stub_port)], env=env)
    gateway = subprocess.Popen([str(Path(sys.executable).parent / "vilmo"), "serve", "--config",
                                str(work / "gateway.yaml"), "--port", str(gateway_port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    direct, proxied = f"http://127.0.0.1:{stub_port}/v1", f"http://127.0.0.1:{gateway_port}/v1"
    try:
        wait_ready(f"{direct}/models", stub)
        wait_ready(f"http://127.0.0.1:{gateway_port}/healthz", gateway)
        results: dict[str, list[float]] = {k: [] for k in (
            "direct", "bare", "default", "direct-stream", "default-stream")}
        with httpx.Client(timeout=30) as client:
            for prompt in prompts(20):  # warm-up: connections, first-call paths
                timed(chat(client, proxied, prompt + " warm"))
            for i, prompt in enumerate(prompts(args.requests)):
                results["direct"].append(timed(chat(client, direct, prompt)))
                results["bare"].append(timed(chat(client, proxied, prompt, "bare")))
                results["default"].append(timed(chat(client, proxied, prompt)))
                results["direct-stream"].append(timed(chat(client, direct, prompt, stream=True)))
                results["default-stream"].append(
                    timed(chat(client, proxied, f"{prompt} ({i} stream)", stream=True)))
        print(f"vilmo gateway overhead, {args.requests} requests each, sequential, "
              f"{os.cpu_count()} CPUs, stub upstream on loopback")
        print(summary("direct to stub (baseline)", results["direct"], None))
        print(summary("gateway, no instruction (policy bare)", results["bare"],
                      results["direct"]))
        print(summary("gateway, relevance instruction (default)", results["default"],
                      results["direct"]))
        print(summary("stream TTFT direct (baseline)", results["direct-stream"], None))
        print(summary("stream TTFT gateway (default)", results["default-stream"],
                      results["direct-stream"]))
    finally:
        for process in (gateway, stub):
            process.terminate()
            process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
