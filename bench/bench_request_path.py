"""The request path at c=1, this checkout against a baseline tree, in one run (a benchmark,
not a test; issue 16): what the gateway adds to a plain reply under the `default` policy
(instruction + output check of a ~150-token reply) and to the first token of a stream with no
policy and with `default` in monitor mode.

One stub upstream and two gateways (`vilmo serve`, one per tree, sharing the ONNX cache: the
judge's code is the same); each round sends the same new prompt straight to the stub and
through both gateways (their order alternating), so a slow spell of a shared machine hits
both. Also read from each gateway's /metrics: the mean time of each stage (instruction,
upstream, check) over its requests. Usage (the baseline tree made with
`git archive <commit> | tar -x -C /tmp/base`):

    python bench/bench_request_path.py --baseline-tree /tmp/base [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from bench_serving import REPLY, cpu_seconds
from harness import (
    REPO,
    chat_body,
    prompts,
    start_tree,
    timed_post,
    timed_stream,
    wait_ready,
)

from vilmo.policy_store import SHIPPED_POLICY_DIR

POLICIES = {
    "passthrough": "values:\n  mft.care: {}\ninstructions: {generator: none}\n"
                   "checks: {output: false}\n",
}
TARGETS = (("default, plain", "default", False), ("no policy, stream", "passthrough", True),
           ("default monitor, stream", "default-monitor", True))
STAGES = ("instruction", "upstream", "check")


def policy_dir(work: Path) -> Path:
    target = work / "policies"
    shutil.copytree(SHIPPED_POLICY_DIR, target)
    shipped = (target / "default.yaml").read_text()
    (target / "default-monitor.yaml").write_text(
        shipped.replace("name: default", "name: default-monitor", 1)
        + "streaming: {mode: monitor}\n")
    for name, text in POLICIES.items():
        (target / f"{name}.yaml").write_text(f"name: {name}\n{text}")
    return target


def stage_sums(client: httpx.Client, url: str) -> dict[tuple[str, str], float]:
    text = client.get(url.removesuffix("/v1") + "/metrics").text
    found = re.finditer(r'vilmo_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} (\S+)', text)
    return {(m.group(2), m.group(1)): float(m.group(3)) for m in found}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    from stub_upstream import free_port

    work = Path(tempfile.mkdtemp(prefix="vilmo-bench-path-"))
    policies = policy_dir(work)
    stub_port = free_port()
    stub = subprocess.Popen([sys.executable, "-c", (
        f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import harness; "
        f"harness.serve_stub({stub_port}, {REPLY!r}, 0.0)")])
    direct = f"http://127.0.0.1:{stub_port}/v1"
    trees = {"baseline": args.baseline_tree.resolve(), "this": REPO}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        wait_ready(f"{direct}/models", stub)
        urls = {}
        for name, tree in trees.items():
            config = work / f"{name}.yaml"  # each its own new store: no cache from past runs
            config.write_text("model_list:\n  - model_name: stub\n    litellm_params:\n"
                              f"      model: openai/stub\n      api_base: {direct}\n"
                              f"      api_key: sk-bench\nrouter_settings: {{num_retries: 0}}\n"
                              f"policy_dir: {policies}\nstore: {{path: {work / name / 'db'}}}\n")
            port = free_port()
            processes[name] = start_tree(tree, config, port)
            urls[name] = f"http://127.0.0.1:{port}/v1"
        texts = prompts(args.rounds * 4 + 40)
        times: dict[tuple[str, str], list[float]] = {}
        direct_ms: dict[bool, list[float]] = {False: [], True: []}
        cpu = {name: 0.0 for name in trees}
        with httpx.Client(timeout=60) as client:
            for i, text in enumerate(texts[:6]):  # first-call paths
                for name, url in urls.items():
                    for _, policy, stream in TARGETS:
                        body = chat_body(f"{text} warm {name} {i}", stream)
                        timed_stream(client, url, body, {"X-Vilmo-Policy": policy}) if stream \
                            else timed_post(client, url, body, {"X-Vilmo-Policy": policy})
            before = {name: stage_sums(client, url) for name, url in urls.items()}
            for r in range(args.rounds):
                order = list(urls) if r % 2 == 0 else list(urls)[::-1]
                for label, policy, stream in TARGETS:
                    text = texts[40 + r * 4 + TARGETS.index((label, policy, stream))]
                    body = chat_body(text, stream)
                    direct_ms[stream].append(timed_stream(client, direct, body, {})[0] if stream
                                             else timed_post(client, direct, body, {}))
                    for name in order:
                        pid = processes[name].pid
                        used = cpu_seconds(pid)
                        headers = {"X-Vilmo-Policy": policy}
                        took = (timed_stream(client, urls[name], body, headers)[0] if stream
                                else timed_post(client, urls[name], body, headers))
                        cpu[name] += cpu_seconds(pid) - used
                        times.setdefault((name, label), []).append(took)
            after = {name: stage_sums(client, url) for name, url in urls.items()}
    finally:
        for process in [*processes.values(), stub]:
            process.terminate()
            process.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)
    base = {s: statistics.median(v) for s, v in direct_ms.items()}
    print(f"request path at c=1: {args.rounds} rounds, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; direct to the stub: plain p50 "
          f"{base[False]:.1f} ms, first token p50 {base[True]:.1f} ms\n")
    print("| target | " + " | ".join(f"{n}: added p50 ms" for n in trees)
          + " | this / baseline | this − baseline, paired by round: median ms |")
    print("|---|" + "---|" * (len(trees) + 2))
    for label, _, stream in TARGETS:
        added = [statistics.median(times[(n, label)]) - base[stream] for n in trees]
        paired = statistics.median(t - b for b, t in zip(times[("baseline", label)],
                                                          times[("this", label)], strict=True))
        print(f"| {label}{' (first token)' if stream else ''} | "
              + " | ".join(f"{a:.1f}" for a in added) + f" | {added[1] / added[0]:.2f}x | "
              f"{paired:+.1f} |")
    print("\nstage means over every measured request (ms), and CPU ms per request:")
    for name in trees:
        delta = {k: after[name].get(k, 0.0) - before[name].get(k, 0.0) for k in after[name]}
        means = {s: delta.get((s, "sum"), 0.0) / max(1.0, delta.get((s, "count"), 0.0)) * 1000
                 for s in STAGES}
        print(f"- {name}: " + ", ".join(f"{s} {m:.1f}" for s, m in means.items())
              + f"; CPU {cpu[name] / (args.rounds * len(TARGETS)) * 1000:.1f} ms/request")


if __name__ == "__main__":
    main()
