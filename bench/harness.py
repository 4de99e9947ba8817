"""Shared parts of the gateway benchmarks: a stub upstream and `vilmo serve` as separate
processes on loopback, started and stopped around a measurement."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from vilmo.policy_store import SHIPPED_POLICY_DIR

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))  # first: tests/proxy must not shadow the proxy package
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}



def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for a benchmark's report: speed figures are
    read against the CPU they ran on."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


SUBJECTS = ["my neighbour", "a coworker", "my sister", "a stranger online", "my landlord",
            "the referee", "my teacher", "a customer", "my best friend", "the new intern"]
ACTS = ["insulted me", "lied to me", "took my parking spot", "copied my work",
        "ignored my messages", "spread a rumour about me", "broke my bike",
        "laughed at my accent", "read my diary", "cheated at cards"]


def prompts(n: int) -> list[str]:
    """Distinct prompts, so that no cache hides the cost of embedding them."""
    return [f"{SUBJECTS[i % 10]} {ACTS[(i // 10) % 10]} (case {i}). What should I do?"
            for i in range(n)]


@dataclass
class Servers:
    direct: str  # the stub upstream's /v1
    gateway: str  # the gateway's /v1
    policy_dir: Path
    gateway_pid: int = 0


def serve_stub(port: int, reply: str | None, chunk_delay: float) -> None:
    import uvicorn
    from stub_upstream import StubUpstream

    stub = StubUpstream(chunk_delay=chunk_delay)
    if reply:
        stub.reply = StubUpstream.reply = reply
    uvicorn.run(stub.app(), host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def servers(policies: dict[str, str], reply: str | None = None,
            chunk_delay: float = 0.0, extra_config: str = "",
            gateway_log: Path | None = None,
            router_settings: str = "{num_retries: 0}") -> Iterator[Servers]:
    """The stub (answering ``reply`` word by word, ``chunk_delay`` s apart when streaming)
    and a gateway in front of it with the shipped policies plus ``policies`` (name → YAML);
    the gateway's output goes to ``gateway_log`` when given."""
    from stub_upstream import free_port

    stub_port, gateway_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="vilmo-bench-"))
    shutil.copytree(SHIPPED_POLICY_DIR, work / "policies")
    for name, text in policies.items():
        (work / "policies" / f"{name}.yaml").write_text(f"name: {name}\n{text}")
    # a store of its own: the default one outlives the run, and its instruction and embedding
    # caches would answer the next run's prompts (prompts() repeats them); none when
    # ``extra_config`` has its own (two ``store:`` keys: the gateway exited 2 at start)
    store = ("" if re.search(r"(?m)^store:", extra_config)
             else f"store: {{path: {work / 'state.db'}}}\n")
    (work / "gateway.yaml").write_text(
        "model_list:\n  - model_name: stub\n    litellm_params:\n"
        f"      model: openai/stub\n      api_base: http://127.0.0.1:{stub_port}/v1\n"
        f"      api_key: sk-bench\nrouter_settings: {router_settings}\n"
        f"policy_dir: {work / 'policies'}\n"
        f"{store}{extra_config}")
    stub = stub_process(stub_port, reply, chunk_delay)
    log = gateway_log.open("wb") if gateway_log else subprocess.DEVNULL
    gateway = subprocess.Popen([str(Path(sys.executable).parent / "vilmo"), "serve", "--config",
                                str(work / "gateway.yaml"), "--port", str(gateway_port)],
                               env=ENV, stdout=log, stderr=log)
    try:
        wait_ready(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        wait_ready(f"http://127.0.0.1:{gateway_port}/healthz", gateway)
        yield Servers(f"http://127.0.0.1:{stub_port}/v1",
                      f"http://127.0.0.1:{gateway_port}/v1", work / "policies", gateway.pid)
    finally:
        for process in (gateway, stub):
            process.terminate()
            process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def start_tree(tree: Path, config: Path, port: int,
               cache_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """`vilmo serve` from the source tree ``tree`` (another checkout, for a before/after run),
    ready to answer; ``cache_dir``: its own graph cache."""
    env = {**ENV, "PYTHONPATH": str(tree)}
    if cache_dir is not None:
        env["VILMO_CACHE_DIR"] = str(cache_dir)
    code = "import sys; from vilmo.cli import main; sys.argv[0] = 'vilmo'; main()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--config", str(config), "--port", str(port)],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/healthz", process)
    return process


def traced_gateway(boot: str, tree: Path, work: Path, name: str, policies: Path, direct: str,
                   ) -> tuple[subprocess.Popen[bytes], str]:
    """`vilmo serve` of ``tree`` run by the trace benches' ``boot`` code (their clock-only
    wrappers; it writes its events to ``work/<name>.json`` on SIGUSR1), over the stub at
    ``direct`` with its own store, ready to answer; its /v1 URL."""
    from stub_upstream import free_port

    config = work / f"{name}.yaml"
    config.write_text(
        "model_list:\n  - model_name: stub\n    litellm_params:\n"
        f"      model: openai/stub\n      api_base: {direct}\n"
        f"      api_key: sk-bench\nrouter_settings: {{num_retries: 0}}\n"
        f"policy_dir: {policies}\nstore: {{path: {work / name / 'db'}}}\n")
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-c", boot, "serve", "--config", str(config), "--port", str(port)],
        env={**ENV, "PYTHONPATH": str(tree), "TRACE_OUT": str(work / f"{name}.json")},
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{port}/healthz", gateway)
    return gateway, f"http://127.0.0.1:{port}/v1"


@dataclass
class TracedRun:
    """The trace benches' run: the stub at ``direct``, one traced gateway per tree at
    ``urls[name]``, their events written under ``work`` by ``dump_traces``."""
    work: Path
    direct: str
    trees: dict[str, Path]
    urls: dict[str, str] = field(default_factory=dict)
    gateways: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def dump_traces(self) -> None:
        """SIGUSR1 to every gateway (each writes ``work/<name>.json``), then a second for
        them to finish writing."""
        for process in self.gateways.values():
            process.send_signal(signal.SIGUSR1)
        time.sleep(1.0)


@contextmanager
def traced_gateways(boot: str, prefix: str, reply: str,
                    baseline_tree: Path | None = None) -> Iterator[TracedRun]:
    """The stub answering ``reply`` and ``traced_gateway`` of this tree (named "this") and,
    when given, of ``baseline_tree`` (named "baseline", first), over the request-path
    bench's policies; all stopped and their work folder removed on the way out."""
    from bench_request_path import policy_dir  # it imports this module
    from stub_upstream import free_port

    work = Path(tempfile.mkdtemp(prefix=prefix))
    policies = policy_dir(work)
    stub_port = free_port()
    stub = stub_process(stub_port, reply)
    trees = {"this": REPO}
    if baseline_tree:
        trees = {"baseline": baseline_tree.resolve(), **trees}
    run = TracedRun(work, f"http://127.0.0.1:{stub_port}/v1", trees)
    try:
        wait_ready(f"{run.direct}/models", stub)
        for name, tree in trees.items():
            run.gateways[name], run.urls[name] = traced_gateway(boot, tree, work, name,
                                                                policies, run.direct)
        yield run
    finally:
        for process in [*run.gateways.values(), stub]:
            process.terminate()
            process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def stub_process(port: int, reply: str | None, chunk_delay: float = 0.0,
                 ) -> subprocess.Popen[bytes]:
    """``serve_stub`` in a process of its own (the benches' one upstream on loopback)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import harness; "
            f"harness.serve_stub({port}, {reply!r}, {chunk_delay})")
    return subprocess.Popen([sys.executable, "-c", code], env=ENV)


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def chat_body(prompt: str, stream: bool = False) -> dict[str, object]:
    return {"model": "stub", "messages": [{"role": "user", "content": prompt}],
            "stream": stream}


def timed_stream(client: httpx.Client, url: str, body: dict[str, object],
                 headers: dict[str, str]) -> tuple[float, float]:
    """(time to the first content chunk, time to the end of the stream), in ms."""
    started = time.perf_counter()
    first = None
    with client.stream("POST", f"{url}/chat/completions", json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and _has_content(line[6:]):
                first = time.perf_counter()
    end = time.perf_counter()
    return ((first or end) - started) * 1000, (end - started) * 1000


def _has_content(data: str) -> bool:
    chunk = json.loads(data)
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def timed_post(client: httpx.Client, url: str, body: dict[str, object],
               headers: dict[str, str]) -> float:
    started = time.perf_counter()
    client.post(f"{url}/chat/completions", json=body, headers=headers).raise_for_status()
    return (time.perf_counter() - started) * 1000


def summary(name: str, samples: list[float], baseline: list[float] | None = None) -> str:
    median = statistics.median(samples)
    p95 = statistics.quantiles(samples, n=20)[18] if len(samples) >= 20 else max(samples)
    line = f"{name:46} median {median:8.2f} ms   p95 {p95:8.2f} ms"
    if baseline:
        base = statistics.median(baseline)
        line += f"   added {median - base:+7.2f} ms   ratio {median / base:5.2f}x"
    return line
