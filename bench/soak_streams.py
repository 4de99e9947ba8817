"""Soak: many concurrent streaming clients against ``vilmo serve`` for a while (a benchmark,
not a test; issue 16). The stub upstream and the gateway run as processes on loopback; each
client streams, reads to the end, and starts again. First the same clients stream straight to
the stub for ``--baseline`` seconds (the baseline, same run), then through the gateway for
``--duration`` seconds.

Reports: streams completed, errors (a status other than 200, an error event, a stream without
``data: [DONE]``, a transport error or a client timeout), time to first token p50/p99 (direct
and through the gateway), and the gateway's RSS after warm-up, at its peak and at the end.

    python bench/soak_streams.py [--clients 200] [--duration 60] [--baseline 10]
                                 [--policy passthrough] [--words 40] [--delay 0.01]
                                 [--retries 0] [--fresh-connections]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from harness import chat_body, prompts, servers

POLICIES = {
    "passthrough": "values:\n  mft.care: {}\ninstructions: {generator: none}\n"
                   "checks: {output: false}\n",
    "monitor": "values:\n  mft.care: {}\n  mft.fairness: {}\ninstructions: {generator: none}\n"
               "streaming: {mode: monitor}\n",
}


@dataclass
class Tally:
    streams: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    ttft_ms: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    """What some of the errors said."""

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def one_stream(client: httpx.AsyncClient, url: str, body: dict[str, object],
                     headers: dict[str, str], tally: Tally) -> None:
    started = time.perf_counter()
    first = None
    last = ""
    try:
        async with client.stream("POST", f"{url}/chat/completions", json=body,
                                 headers=headers) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                code = json.loads(text).get("error", {}).get("code") if text[:1] == "{" else None
                tally.error(f"status {response.status_code} {code}")
                tally.samples.append(text[:300])
                return
            async for line in response.aiter_lines():
                if not line:
                    continue
                last = line
                if line.startswith("data: {"):
                    if '"error"' in line and "error" in json.loads(line[6:]):
                        tally.error("error event")
                        tally.samples.append(line[:300])
                    elif first is None and '"content"' in line:
                        first = time.perf_counter()
    except httpx.TimeoutException:
        tally.error("client timeout")
        return
    except httpx.TransportError as exc:
        tally.error(f"transport: {type(exc).__name__}")
        tally.samples.append(f"{type(exc).__name__} after {time.perf_counter() - started:.1f} s,"
                             f" {'after' if first else 'before'} the first token: {exc!r}"[:300])
        return
    if last != "data: [DONE]":
        tally.error("no [DONE]")
        return
    tally.streams += 1
    tally.ttft_ms.append(((first or time.perf_counter()) - started) * 1000)


async def soak(url: str, headers: dict[str, str], clients: int, seconds: float,
               keepalive: bool = True) -> Tally:
    tally = Tally()
    bodies = [chat_body(p, True) for p in prompts(clients)]
    limits = httpx.Limits(max_connections=clients,
                          max_keepalive_connections=clients if keepalive else 0)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        deadline = time.monotonic() + seconds

        async def loop(body: dict[str, object]) -> None:
            while time.monotonic() < deadline:
                await one_stream(client, url, body, headers, tally)

        await asyncio.gather(*(loop(b) for b in bodies))
    return tally


def rss_mb(pid: int) -> float:
    """The resident set of ``pid`` and its children (``--workers``), in MB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


async def watched(pid: int, work: asyncio.Future[Tally]) -> tuple[Tally, float]:
    """The work's result and the peak RSS of ``pid`` while it ran (sampled every 0.5 s)."""
    peak = rss_mb(pid)
    while not work.done():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.5)
    return work.result(), peak


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, tally: Tally, seconds: float, baseline: Tally | None = None) -> str:
    p50, p99 = percentile(tally.ttft_ms, 0.5), percentile(tally.ttft_ms, 0.99)
    line = (f"| {name} | {tally.streams} | {tally.streams / seconds:.0f} | "
            f"{sum(tally.errors.values())} {tally.errors or ''} | {p50:.1f} | {p99:.1f} |")
    if baseline is not None and baseline.ttft_ms:
        line += (f" {p50 / statistics.median(baseline.ttft_ms):.2f}x / "
                 f"{p99 / percentile(baseline.ttft_ms, 0.99):.2f}x |")
    else:
        line += " |"
    return line


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Model name")), platform.processor())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--baseline", type=float, default=10.0)
    parser.add_argument("--policy", default="passthrough",
                        help=f"{', '.join(POLICIES)} or a shipped policy (default, ...)")
    parser.add_argument("--words", type=int, default=40, help="words in the streamed reply")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between words")
    parser.add_argument("--fresh-connections", action="store_true",
                        help="a new connection per stream (no keep-alive between streams)")
    parser.add_argument("--retries", type=int, default=0,
                        help="router_settings.num_retries (LiteLLM retries a failed call)")
    args = parser.parse_args()
    reply = " ".join(["Take a breath before you answer."] * (args.words // 6 + 1)).split()
    text = " ".join(reply[:args.words])
    headers = {"X-Vilmo-Policy": args.policy}
    log = Path(tempfile.mkdtemp(prefix="vilmo-soak-")) / "gateway.log"
    with servers(POLICIES, text, args.delay, gateway_log=log,
                 router_settings=f"{{num_retries: {args.retries}}}") as s:
        pid = s.gateway_pid
        asyncio.run(soak(s.gateway, headers, min(args.clients, 20), 3.0))  # warm-up
        keepalive = not args.fresh_connections
        direct = asyncio.run(soak(s.direct, {}, args.clients, args.baseline, keepalive))
        rss_start = rss_mb(pid)

        async def through_gateway() -> tuple[Tally, float]:
            work = asyncio.ensure_future(soak(s.gateway, headers, args.clients, args.duration,
                                              keepalive))
            return await watched(pid, work)

        started = time.monotonic()
        gateway, rss_peak = asyncio.run(through_gateway())
        elapsed = time.monotonic() - started
        rss_end = rss_mb(pid)
    print(f"soak: {args.clients} concurrent streaming clients, policy {args.policy!r}, "
          f"{args.words}-word replies {args.delay * 1000:.0f} ms apart, "
          f"num_retries {args.retries}"
          f"{', a new connection per stream' if args.fresh_connections else ''}; "
          f"{os.cpu_count()} CPUs ({cpu_name()}), clients, stub and gateway on one machine\n")
    print("| target | streams | streams/s | errors | TTFT p50 ms | TTFT p99 ms | "
          "p50 / p99 vs direct |")
    print("|---|---|---|---|---|---|---|")
    print(report(f"direct to the stub ({args.baseline:.0f} s, baseline)", direct,
                 args.baseline))
    print(report(f"gateway ({elapsed:.0f} s)", gateway, elapsed, direct))
    print(f"\ngateway RSS: {rss_start:.0f} MB after warm-up, peak {rss_peak:.0f} MB, "
          f"{rss_end:.0f} MB at the end (growth {rss_end - rss_start:+.0f} MB, "
          f"{(rss_end - rss_start) / rss_start * 100:+.1f} %)")
    for sample in dict.fromkeys(direct.samples + gateway.samples):
        print(f"  error: {sample}")
    logged = [ln for ln in log.read_text(errors="replace").splitlines()
              if "ERROR" in ln or "Error" in ln or "Traceback" in ln]
    print(f"\ngateway log ({log}): {len(logged)} error lines")
    for line in list(dict.fromkeys(logged))[:8]:
        print(f"  {line[:240]}")


if __name__ == "__main__":
    main()
