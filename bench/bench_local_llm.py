"""Throughput of `vilmo local-llm`: N concurrent chat requests, completion tokens per second.

Usage: python bench/bench_local_llm.py [--url http://127.0.0.1:8008/v1] [--n 32] [--max-tokens 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

PROMPT = ("Write a completion for the story. Story: Mei had been teased by her classmate Lin "
          "for weeks. One afternoon Lin slipped on the wet stairs. Mei looked down at her and")


async def main(url: str, n: int, max_tokens: int) -> dict[str, float]:
    body = {"model": "gemma-3-270m", "max_tokens": max_tokens, "temperature": 1.0,
            "messages": [{"role": "user", "content": PROMPT}]}
    async with httpx.AsyncClient(timeout=600) as client:
        start = time.monotonic()
        replies = await asyncio.gather(*(client.post(f"{url}/chat/completions", json=body)
                                         for _ in range(n)))
        wall = time.monotonic() - start
    tokens = sum(r.json()["usage"]["completion_tokens"] for r in replies)
    return {"requests": n, "completion_tokens": tokens, "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8008/v1")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.url, args.n, args.max_tokens))))
