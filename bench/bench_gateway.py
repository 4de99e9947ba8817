"""Latency the gateway adds over calling the upstream directly (a benchmark, not a test).

The stub upstream and `vilmo serve` run as separate processes on loopback; the same requests
go alternately straight to the stub (the baseline, measured in the same run) and through the
gateway with three policies: `bare` (no instruction, no check: the proxy path alone),
`instruct` (relevance instruction, no check) and `default` (instruction plus the value
classifier on the reply). Prompts are distinct so no cache hides the encoder's cost.

    python bench/bench_gateway.py [--requests 200]
"""

from __future__ import annotations

import argparse
import os

import httpx
from harness import chat_body, prompts, servers, summary, timed_post, timed_stream

POLICIES = {
    "bare": "values:\n  mft.care: {}\ninstructions: {generator: none}\nchecks: {output: false}\n",
    "instruct": "values:\n  mft.care: {}\n  mft.fairness: {}\nchecks: {output: false}\n",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {k: [] for k in (
        "direct", "bare", "instruct", "default", "direct-ttft", "default-ttft")}
    with servers(POLICIES) as s, httpx.Client(timeout=60) as client:
        for prompt in prompts(20):  # warm-up: connections, model loads, first-call paths
            timed_post(client, s.gateway, chat_body(prompt + " warm"), {})
        for i, prompt in enumerate(prompts(args.requests)):
            body = chat_body(prompt)
            runs["direct"].append(timed_post(client, s.direct, body, {}))
            for policy in ("bare", "instruct", "default"):
                runs[policy].append(timed_post(client, s.gateway, chat_body(
                    f"{prompt} [{policy}]"), {"X-Vilmo-Policy": policy}))
            stream = chat_body(f"{prompt} [stream]", stream=True)
            runs["direct-ttft"].append(timed_stream(client, s.direct, stream, {})[0])
            runs["default-ttft"].append(timed_stream(client, s.gateway, stream, {})[0])
    print(f"vilmo gateway overhead: {args.requests} requests each, sequential, "
          f"{os.cpu_count()} CPUs, stub upstream on loopback")
    print(summary("direct to stub (baseline)", runs["direct"]))
    print(summary("gateway, no instruction, no check", runs["bare"], runs["direct"]))
    print(summary("gateway, relevance instruction", runs["instruct"], runs["direct"]))
    print(summary("gateway, instruction + reply check", runs["default"], runs["direct"]))
    print(summary("stream TTFT direct (baseline)", runs["direct-ttft"]))
    print(summary("stream TTFT gateway (default, buffer mode)", runs["default-ttft"],
                  runs["direct-ttft"]))


if __name__ == "__main__":
    main()
