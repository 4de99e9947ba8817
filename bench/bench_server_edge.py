"""The cost of the server edge (``proxy.server``: uvicorn's protocols with its limits) against
uvicorn's plain httptools protocol (no limits), on one no-policy gateway config over the stub
upstream: the edge on httptools (``vilmo serve``'s default) and on h11.

The three gateways run at once, each its own process; the rounds interleave them (plain,
edge httptools, edge h11, plain, ...), small non-stream chat requests at c=1 and at c=32.
Prints requests per second, latency, and the gateway process's CPU time per request
(``/proc``: on a shared host less noisy than throughput, which the client and the stub on the
same cores also set), each as a ratio of plain httptools'. First, the protocols alone: each
fed the same request on an in-memory transport with an app that answers at once (no socket,
no gateway), microseconds a request, interleaved too: what parsing and the limits cost.

    python bench/bench_server_edge.py [--requests 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
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


class MemoryTransport(asyncio.Transport):
    """A transport that keeps nothing: what the protocol writes is only counted."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 4000)}.get(
            name, default)


async def answer_at_once(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def protocol_round(protocol: str, request: bytes, count: int) -> float:
    """Microseconds a request for ``count`` keep-alive requests on one connection."""
    from uvicorn.server import ServerState

    from proxy.server import ServerConfig
    from proxy.settings import ServerSettings

    config = (uvicorn.Config(answer_at_once, http="httptools", log_level="warning")
              if protocol == "plain" else
              ServerConfig(answer_at_once, ServerSettings(), parser=protocol,  # type: ignore[arg-type]
                           log_level="warning"))
    config.load()
    state = ServerState()
    protocol_class: Any = config.http_protocol_class
    connection = protocol_class(config=config, server_state=state, app_state={})
    transport = MemoryTransport()
    connection.connection_made(transport)
    started = time.perf_counter()
    for _ in range(count):
        connection.data_received(request)
        while state.tasks or not state.total_requests:
            await asyncio.sleep(0)
    spent = time.perf_counter() - started
    assert not transport.closing and state.total_requests == count, protocol
    connection.connection_lost(None)
    return spent * 1e6 / count


def protocol_costs(rounds: int, count: int) -> None:
    body = json.dumps(chat_body("Hello there, how are you?")).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:4000\r\n"
               b"accept: */*\r\naccept-encoding: gzip, deflate\r\nconnection: keep-alive\r\n"
               b"user-agent: python-httpx/0.28.1\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(body), body))
    spent: dict[str, list[float]] = {name: [] for name in GATEWAYS}
    for _ in range(rounds):
        for name, launched in GATEWAYS.items():
            spent[name].append(asyncio.run(protocol_round(launched, request, count)))
    base = statistics.median(spent["plain httptools"])
    print(f"protocols alone ({rounds} interleaved rounds of {count} requests; median round):")
    for name, rounds_spent in spent.items():
        cost = statistics.median(rounds_spent)
        print(f"  {name:15} {cost:7.1f} us a request ({cost / base:4.2f}x; "
              f"{cost - base:+6.1f} us)")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    print(f"CPU: {cpu_model()}")
    protocol_costs(rounds=15, count=2000)
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
        results: dict[tuple[str, int], tuple[list[float], float, float]] = {}
        for concurrency in (1, 32):
            for protocol, (_, url) in gateways.items():  # warm up
                asyncio.run(run_round(url, 50, concurrency))
            for _ in range(args.rounds):
                for protocol, (process, url) in gateways.items():
                    cpu = cpu_seconds(process.pid)
                    started = time.perf_counter()
                    latencies = asyncio.run(run_round(url, per_round, concurrency))
                    spent = time.perf_counter() - started
                    cpu = cpu_seconds(process.pid) - cpu
                    done, total, used = results.get((protocol, concurrency), ([], 0.0, 0.0))
                    results[(protocol, concurrency)] = done + latencies, total + spent, used + cpu
        print(f"gateways ({per_round * args.rounds} requests per protocol and level, "
              f"{args.rounds} interleaved rounds):")
        for concurrency in (1, 32):
            base_rate = base_cpu = 0.0
            for protocol in gateways:
                latencies, spent, used = results[(protocol, concurrency)]
                rate = len(latencies) / spent
                cpu_ms = used * 1000 / len(latencies)
                base_rate, base_cpu = base_rate or rate, base_cpu or cpu_ms
                p95 = statistics.quantiles(latencies, n=20)[18]
                print(f"c={concurrency:<3} {protocol:15} {rate:7.1f} req/s "
                      f"({rate / base_rate:4.2f}x)   median {statistics.median(latencies):6.2f}"
                      f" ms   p95 {p95:7.2f} ms   CPU {cpu_ms:5.2f} ms/request "
                      f"({cpu_ms / base_cpu:4.2f}x)")
    finally:
        for process, _ in gateways.values():
            process.terminate()
            process.wait(timeout=20)
        stub.terminate()
        stub.wait(timeout=20)


if __name__ == "__main__":
    main()
