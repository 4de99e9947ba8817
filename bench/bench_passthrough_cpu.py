"""The gateway's own CPU per pass-through request (no policy: no instruction, no check; the
direct path), this checkout against a baseline tree, in-process (a benchmark, not a test;
issue 16).

One stub upstream (a process of its own, the 122-word reply of ``bench_serving``); per tree a
worker process imports that tree's ``proxy``, runs the app's lifespan, and sends requests at
c=32 through ``httpx.ASGITransport`` (no socket, no server edge: the edge is
``bench_server_edge``'s), non-stream and stream alternately; it reports the CPU time of its
main thread (the app and the in-memory client; the stub's time is not in it) per request.
Trees alternate round by round; medians over the rounds, ratio after / before. ``--profile``
writes one worker's cProfile stats instead.

    git archive <base> | tar -x -C /tmp/base
    python bench/bench_passthrough_cpu.py --baseline-tree /tmp/base [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE = "values:\n  mft.care: {}\ninstructions: {generator: none}\nchecks: {output: false}\n"


async def _send(requests: int, stream: bool, stub: str, work: Path) -> tuple[float, float]:
    import httpx

    from proxy.app import create_app
    from proxy.settings import GatewayConfig

    policies = work / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "bare.yaml").write_text(f"name: bare\n{BARE}")
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "stub", "litellm_params": {
            "model": "openai/stub-model", "api_base": stub, "api_key": "sk-bench"}}],
        "router_settings": {"num_retries": 0}, "upstream": {"direct": "auto"},
        "policy_dir": str(policies), "default_policy": "bare",
        "store": {"path": str(work / "state.db")}})
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            async def one(i: int) -> None:
                body = {"model": "stub", "stream": stream,
                        "messages": [{"role": "user", "content": f"Hello there ({i})."}]}
                if stream:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                        async for _ in r.aiter_bytes():
                            pass
                        assert r.status_code == 200, r.status_code
                else:
                    r = await client.post("/v1/chat/completions", json=body)
                    assert r.status_code == 200, r.text

            async def worker(ids: range) -> None:
                for i in ids:
                    await one(i)

            await asyncio.gather(*(worker(range(k, 64, 32)) for k in range(32)))  # warm
            start, start_all = time.thread_time(), time.process_time()
            per = requests // 32
            await asyncio.gather(*(worker(range(k * per, (k + 1) * per)) for k in range(32)))
            await asyncio.sleep(0.3)  # the store's writer thread catches up
            count = per * 32
            return ((time.thread_time() - start) / count * 1e6,
                    (time.process_time() - start_all) / count * 1e6)


def worker_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as work:
        if args.profile:
            import cProfile
            profile = cProfile.Profile()
            profile.enable()
        out: dict[str, float] = {}
        for kind in args.kinds.split(","):
            main, process = asyncio.run(_send(args.requests, kind == "stream", args.stub,
                                              Path(work)))
            out[kind], out[f"{kind}, process"] = main, process
        if args.profile:
            profile.disable()
            profile.dump_stats(args.profile)
        print(json.dumps(out))


def run_worker(tree: Path, stub: str, requests: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, __file__, "--worker", "--stub", stub,
                           "--requests", str(requests)], env=env, cwd=tree, check=True,
                          capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--stub", default="")
    parser.add_argument("--profile", default="")
    parser.add_argument("--kinds", default="plain,stream")
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    sys.path.insert(0, str(REPO / "bench"))
    from bench_serving import REPLY
    from harness import stub_process, wait_ready
    from stub_upstream import free_port

    port = free_port()
    stub = stub_process(port, REPLY)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", stub)
        url = f"http://127.0.0.1:{port}/v1"
        if args.profile:
            args.stub = url
            return worker_main(args)
        trees = {"this": REPO}
        if args.baseline_tree:
            trees["base"] = args.baseline_tree.resolve()
        seen: dict[str, dict[str, list[float]]] = {t: {} for t in trees}
        for r in range(args.rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                for kind, us in run_worker(trees[name], url, args.requests).items():
                    seen[name].setdefault(kind, []).append(us)
        for kind in seen["this"]:
            line = f"{kind:16s} c=32 CPU/request: this {statistics.median(seen['this'][kind]):.0f} us"
            if "base" in seen:
                base = statistics.median(seen["base"][kind])
                line += (f", base {base:.0f} us, ratio "
                         f"{statistics.median(seen['this'][kind]) / base:.3f}")
            print(line, flush=True)
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()
