"""Benchmark the state store's per-request operations on both backends (a benchmark, not a test).

Prints one JSON object: for SQLite (a temporary file) and Redis (127.0.0.1:6379, a prefix of
its own, deleted afterwards), the median microseconds of ``find_key``, ``admit``,
``charge_tokens``, ``cache_get``, ``audit.write`` (the hand-over on the request path) and the
audit trail's write rate (records/s through the background writer), each with its ratio to the
backend's bare round trip measured in the same run (Redis ``PING``, SQLite ``SELECT 1``). Usage:

    .venv/bin/python bench/bench_store.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from proxy.store import AuditRecord, Store, StoreSettings, open_store

REDIS = "redis://127.0.0.1:6379/0"


def median_us(operation: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        operation()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def measure(store: Store, baseline: Callable[[], object], rounds: int) -> dict[str, float]:
    issued = store.create_key("bench", rpm=10**9, tpm=10**9)
    key = issued.record
    store.cache_set("embedding", "prompt", b"x" * 1536)
    base = median_us(baseline, rounds)
    results = {"baseline_us": round(base, 1)}
    operations: dict[str, Callable[[], object]] = {
        "find_key": lambda: store.find_key(issued.key),
        "admit": lambda: store.admit(key.id, key.rpm, key.tpm),
        "charge_tokens": lambda: store.charge_tokens(key.id, 100),
        "cache_get": lambda: store.cache_get("embedding", "prompt"),
    }
    for name, operation in operations.items():
        us = median_us(operation, rounds)
        results[f"{name}_us"] = round(us, 1)
        results[f"{name}_x_baseline"] = round(us / base, 2)
    counter = iter(range(10**9))
    results["audit_write_us"] = round(median_us(lambda: store.audit.write(AuditRecord(
        id=f"req-{next(counter)}", ts=time.time(), key="bench", data={"n": 1})), rounds), 1)
    store.audit.flush(60)
    records = [AuditRecord(id=f"rate-{i}", ts=time.time(), key="bench", data={"n": i})
               for i in range(rounds * 5)]
    started = time.perf_counter()
    for record in records:
        store.audit.write(record)
    store.audit.flush(120)
    results["audit_records_per_s"] = round(len(records) / (time.perf_counter() - started))
    return results


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    report: dict[str, object] = {"cpu": cpu_name(), "load_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        store = open_store(StoreSettings(path=path, spool_dir=Path(folder) / "spool"))
        bare = sqlite3.connect(path)
        report["sqlite"] = measure(store, lambda: bare.execute("SELECT 1").fetchone(),
                                   args.rounds)
        bare.close()
        store.close()
        prefix = f"bench-{secrets.token_hex(4)}"
        store = open_store(StoreSettings(url=REDIS, prefix=prefix,
                                         spool_dir=Path(folder) / "spool-redis"))
        client = redis.Redis.from_url(REDIS)
        try:
            report["redis"] = measure(store, client.ping, args.rounds)
        finally:
            store.close()
            for name in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(name)
            client.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
