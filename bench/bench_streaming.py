"""What each streaming mode costs: time to first token and total time of a streamed reply
(a benchmark, not a test). The stub streams a ~100-word reply one word every `--delay`
seconds (a model's pace); the same request goes straight to the stub (the baseline, same run)
and through the gateway under each mode with the real value classifier.

    python bench/bench_streaming.py [--requests 20] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import os

import httpx
from harness import chat_body, prompts, servers, summary, timed_stream

REPLY = ("Take a breath before you answer. " * 20).strip()  # ~120 tokens, benign
MODES = {
    "unchecked": "values:\n  mft.care: {}\ninstructions: {generator: none}\nchecks: {output: false}\n",
    **{mode: "values:\n  mft.care: {}\n  mft.fairness: {}\ninstructions: {generator: none}\n"
             f"streaming: {{mode: {mode}, window_tokens: 40}}\n"
       for mode in ("buffer", "chunked", "monitor")},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    ttft: dict[str, list[float]] = {k: [] for k in ("direct", *MODES)}
    total: dict[str, list[float]] = {k: [] for k in ("direct", *MODES)}
    with servers(MODES, REPLY, args.delay) as s, httpx.Client(timeout=120) as client:
        for prompt in prompts(3):
            timed_stream(client, s.gateway, chat_body(prompt, True), {"X-Vilmo-Policy": "buffer"})
        for prompt in prompts(args.requests):
            first, end = timed_stream(client, s.direct, chat_body(prompt, True), {})
            ttft["direct"].append(first)
            total["direct"].append(end)
            for mode in MODES:
                first, end = timed_stream(client, s.gateway, chat_body(f"{prompt} {mode}", True),
                                          {"X-Vilmo-Policy": mode})
                ttft[mode].append(first)
                total[mode].append(end)
    print(f"streaming modes: {args.requests} streams each, ~{len(REPLY.split())} words "
          f"{args.delay * 1000:.0f} ms apart, {os.cpu_count()} CPUs, real classifier")
    for name, samples in (("time to first token", ttft), ("total time", total)):
        print(summary(f"{name}: direct to stub (baseline)", samples["direct"]))
        for mode in MODES:
            print(summary(f"{name}: gateway, mode {mode}", samples[mode], samples["direct"]))


if __name__ == "__main__":
    main()
