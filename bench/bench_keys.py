"""What a virtual key costs per request over a config key (a benchmark, not a test).

One gateway (`vilmo serve`, a process) with a config key and a virtual key issued through the
admin API, both bound to the same policy (`bare`: no instruction, no check, so the key path is
what differs). The same requests alternate between the config key (the baseline, same run) and
the virtual key, first without limits (one store read to find the key), then with rpm/tpm limits
(plus the atomic admit and the token charge).

    python bench/bench_keys.py [--requests 300] [--backend redis|sqlite]
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile

import httpx
from harness import chat_body, prompts, servers, summary, timed_post

ADMIN = "sk-bench-admin-" + secrets.token_hex(12)
CONFIG_KEY = "sk-bench-config-" + secrets.token_hex(12)
BARE = "values:\n  mft.care: {}\ninstructions: {generator: none}\nchecks: {output: false}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--backend", choices=["redis", "sqlite"], default="redis")
    args = parser.parse_args()
    if args.backend == "redis":
        store = f"store: {{url: 'redis://127.0.0.1:6379/0', prefix: vilmo-bench-{secrets.token_hex(4)}}}\n"
    else:
        store = f"store: {{path: {tempfile.mkdtemp(prefix='vilmo-bench-state-')}/state.db}}\n"
    extra = (f"auth:\n  admin_key: {ADMIN}\n  keys:\n    - {{key: {CONFIG_KEY}, name: cfg, "
             f"policy: bare}}\n{store}")
    runs: dict[str, list[float]] = {"config": [], "virtual": [], "limited": []}
    with servers({"bare": BARE}, extra_config=extra) as s, httpx.Client(timeout=60) as client:
        admin_url = s.gateway.removesuffix("/v1") + "/admin/keys"
        auth = {"authorization": f"Bearer {ADMIN}"}
        plain = client.post(admin_url, headers=auth, json={"name": "plain", "policy": "bare"})
        limited = client.post(admin_url, headers=auth, json={
            "name": "limited", "policy": "bare", "rpm": 10**9, "tpm": 10**9})
        keys = {"config": CONFIG_KEY, "virtual": plain.json()["key"],
                "limited": limited.json()["key"]}
        for prompt in prompts(20):
            for key in keys.values():
                timed_post(client, s.gateway, chat_body(prompt), {"authorization": f"Bearer {key}"})
        for prompt in prompts(args.requests):
            for name, key in keys.items():
                runs[name].append(timed_post(client, s.gateway, chat_body(prompt),
                                             {"authorization": f"Bearer {key}"}))
    print(f"virtual keys ({args.backend} store): {args.requests} requests each, sequential, "
          f"{os.cpu_count()} CPUs, stub upstream on loopback")
    print(summary("config key (baseline)", runs["config"]))
    print(summary("virtual key, no limits", runs["virtual"], runs["config"]))
    print(summary("virtual key, rpm + tpm limits", runs["limited"], runs["config"]))


if __name__ == "__main__":
    main()
