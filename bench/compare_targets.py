"""The servers `compare_litellm.py` measures, and the load it sends them.

Each server is a process of its own on loopback: the stub upstream, the LiteLLM proxy (from its
own virtualenv, one worker, a master key), and vilmo gateways. A server's CPU time and peak RSS
are read from /proc (Linux) for its whole process tree, so one measurement covers uvicorn's
workers too. The load comes from aiohttp (lighter than httpx, so the client takes less of the
shared cores from the servers under test).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
       "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def tree(pid: int) -> list[int]:
    """The process and its descendants (uvicorn may fork workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process tree so far."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def peak_rss_mb(pid: int) -> float:
    """The largest resident set each process of the tree has had (VmHWM), added up."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class Server:
    name: str
    url: str  # …/v1
    process: subprocess.Popen[bytes]
    startup_s: float = 0.0

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def peak_rss_mb(self) -> float:
        return peak_rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def launch(name: str, command: list[str], port: int, headers: dict[str, str],
           model: str = "stub", env: dict[str, str] | None = None,
           log: Path | None = None) -> Server:
    """Start a server and time it to its first answered chat completion."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (lives with the process)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env or ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_answered(name, process, port, headers, model, started, log)
    except BaseException:
        process.kill()
        raise
    return Server(name, f"http://127.0.0.1:{port}/v1", process, time.perf_counter() - started)


def wait_answered(name: str, process: subprocess.Popen[bytes], port: int,
                  headers: dict[str, str], model: str, started: float, log: Path | None,
                  ) -> None:
    url = f"http://127.0.0.1:{port}/v1"
    body = {"model": model, "messages": [{"role": "user", "content": "start"}]}
    deadline = started + 240
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} (log: {log})")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{name} did not answer within 240 s (log: {log})")
        try:
            import urllib.request

            request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                             {"content-type": "application/json", **headers})
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.05)


@dataclass
class Sample:
    latency_ms: float
    ttft_ms: float | None
    status: int


@dataclass
class Block:
    """One block of requests to one target: its samples, wall time and server CPU."""

    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0


async def one(session: aiohttp.ClientSession, url: str, body: dict[str, object],
              headers: dict[str, str]) -> Sample:
    started = time.perf_counter()
    ttft = None
    try:
        async with session.post(f"{url}/chat/completions", json=body, headers=headers) as r:
            if body.get("stream"):
                async for line in r.content:
                    if ttft is None and line.startswith(b"data: {") and has_content(line[6:]):
                        ttft = (time.perf_counter() - started) * 1000
            else:
                await r.read()
            status = r.status
    except (TimeoutError, aiohttp.ClientError):
        status = 599
    return Sample((time.perf_counter() - started) * 1000, ttft, status)


def has_content(data: bytes) -> bool:
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


async def run_block(session: aiohttp.ClientSession, server: Server,
                    bodies: list[dict[str, object]], headers: dict[str, str],
                    concurrency: int, max_s: float = 3600.0) -> Block:
    """Send ``bodies`` with ``concurrency`` requests in flight, no new one after ``max_s``
    seconds (a slow target gets fewer samples, not a longer run); time the block and the
    server's CPU over it."""
    queue = list(reversed(bodies))
    block = Block()
    stop_at = time.perf_counter() + max_s

    async def worker() -> None:
        while queue and time.perf_counter() < stop_at:
            block.samples.append(await one(session, server.url, queue.pop(), headers))

    cpu = server.cpu()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    block.wall_s = time.perf_counter() - started
    block.cpu_s = server.cpu() - cpu
    return block


def python() -> str:
    return sys.executable
