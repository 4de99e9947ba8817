"""The Markdown report of `compare_litellm.py`: the issue's targets, a summary in the issue's
shape, and every figure, as ratios to LiteLLM and to the stub measured in the same run."""

from __future__ import annotations

import math
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DIRECT, LITELLM = "direct to stub", "LiteLLM proxy"
BARE, ROUTER = "vilmo, no policy", "vilmo, no policy, LiteLLM Router"
DEFAULT, MONITOR = "vilmo, default (stream: buffer)", "vilmo, default, monitor"
SERVER_OF = {LITELLM: "litellm", BARE: "vilmo", ROUTER: "vilmo-router", DEFAULT: "vilmo-default"}


@dataclass
class Row:
    scenario: str
    target: str
    requests: int
    errors: int
    statuses: str
    """The failed requests by status, e.g. ``29×503``."""
    p50: float
    p99: float
    ttft: float | None
    rps: float
    cpu_ms: float


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
    except OSError:
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in text.splitlines()
             if line.startswith("Model name")]
    return names[0] if names else "unknown CPU"


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.{digits}f}{unit}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return "–"
    return f"{value / base:.2f}×"


def write_report(out: Path, rows: list[Row], startup: dict[str, float],
                 peaks: dict[str, float], judge_rate: float, argv: list[str],
                 litellm_version: str | None, seconds: float) -> None:
    at = {(r.scenario, r.target): r for r in rows}

    def get(scenario: str, target: str) -> Row | None:
        return at.get((scenario, target))

    def added(scenario: str, target: str, ttft: bool = False) -> float | None:
        row, base = get(scenario, target), get(scenario, DIRECT)
        if row is None or base is None:
            return None
        if ttft:
            return None if row.ttft is None or base.ttft is None else row.ttft - base.ttft
        return row.p50 - base.p50

    def rps(scenario: str, target: str) -> float | None:
        row = get(scenario, target)
        return row.rps if row else None

    lines = ["# vilmo against the LiteLLM proxy, one stub upstream", "",
             (f"Made by `{shlex.join(['python', *argv])}` on "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({seconds / 60:.1f} min), "
              f"commit {_commit()}."), "",
             (f"CPU: {cpu_model()}, {os.cpu_count()} cores, shared with other jobs (load "
             f"average {os.getloadavg()[0]:.1f} at the end): read the ratios, not the "
             f"milliseconds. LiteLLM: {litellm_version or 'not measured (no venv)'}, one worker, "
             "a master key. The stub answers a fixed 122-word reply (streamed word by word). "
             "Targets are interleaved in blocks (every round visits each, in a rotated order); "
             "added = this target's p50 less the stub's p50 in the same run. CPU is the "
             "server's process tree (user + system) over its blocks, per request."), "",
             ("Targets: `vilmo, no policy` is a policy with no instruction and no check on the "
              "direct path (`upstream.direct: auto`); `…, LiteLLM Router` the same through "
              "LiteLLM's Router (`upstream.direct: never`); `default` the shipped policy "
              "(instruction + output check), streams in buffer mode, and in monitor mode by "
              "`X-Vilmo-Policy`. req/s counts answered (200) requests only; errors: 503 = a "
              "check failed closed (its timeout), 599 = the client's connection failed. A block "
              "takes no new request after `--block-s`, so slow targets have fewer samples."), ""]
    lt_added = added("non-stream, c=1", LITELLM)
    checks = [
        ("pass-through added p50 (non-stream, c=1) ≤ 0.5 × LiteLLM's",
         ratio(added("non-stream, c=1", BARE), lt_added),
         _le(added("non-stream, c=1", BARE), lt_added, 0.5)),
        ("pass-through throughput (non-stream, c=32) ≥ 2 × LiteLLM's",
         ratio(rps("non-stream, c=32", BARE), rps("non-stream, c=32", LITELLM)),
         _ge(rps("non-stream, c=32", BARE), rps("non-stream, c=32", LITELLM), 2.0)),
        ("`default` adds ≤ 25 ms p50 at c=1 (non-stream)",
         fmt(added("non-stream, c=1", DEFAULT), 1, " ms"),
         _le(added("non-stream, c=1", DEFAULT), 25.0, 1.0)),
        (("checked throughput at c=32 ≥ 60 % of the judge's raw batched rate "
         f"({judge_rate:.1f} replies/s, batches of 32), no check timeouts"),
         (f"{ratio(rps('non-stream, c=32', DEFAULT), judge_rate)}, "
         f"{_errors(get('non-stream, c=32', DEFAULT))} errors"),
         _ge(rps("non-stream, c=32", DEFAULT), judge_rate, 0.6)
         and _errors(get("non-stream, c=32", DEFAULT)) == 0),
        ("monitor-mode streams add ≤ 5 ms to the first token (c=1)",
         fmt(added("stream, c=1", MONITOR, ttft=True), 1, " ms"),
         _le(added("stream, c=1", MONITOR, ttft=True), 5.0, 1.0)),
    ]
    lines += ["## Targets (issue 16)", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if met else 'no'} |" for name, value, met in checks]
    lines += ["", "## Summary", "", "| | " + " | ".join(SERVER_OF) + " |",
              "|---" * (len(SERVER_OF) + 1) + "|"]
    summary: dict[str, Callable[[str], str]] = {
        "added p50, non-stream, c=1 (× LiteLLM's)": lambda t: _with(
            fmt(added("non-stream, c=1", t), 1, " ms"), ratio(added("non-stream, c=1", t),
                                                               lt_added)),
        "throughput, non-stream, c=32 (× LiteLLM's)": lambda t: _with(
            fmt(rps("non-stream, c=32", t), 0, " req/s"),
            ratio(rps("non-stream, c=32", t), rps("non-stream, c=32", LITELLM))),
        "CPU per request, non-stream, c=1": lambda t: fmt(
            _cpu(get("non-stream, c=1", t)), 1, " ms"),
        "CPU per request, stream, c=1": lambda t: fmt(_cpu(get("stream, c=1", t)), 1, " ms"),
        "added time to first token, stream, c=1": lambda t: fmt(
            added("stream, c=1", t, ttft=True), 1, " ms") + (
            f" (monitor {fmt(added('stream, c=1', MONITOR, ttft=True), 1, ' ms')})"
            if t == DEFAULT else ""),
        "peak RSS (process tree)": lambda t: fmt(peaks.get(SERVER_OF[t]), 0, " MB"),
        "start to first answered request": lambda t: fmt(startup.get(SERVER_OF[t]), 1, " s"),
    }
    for name, cell in summary.items():
        lines.append(f"| {name} | " + " | ".join(cell(t) for t in SERVER_OF) + " |")
    lines += ["", "## Every figure", ""]
    for scenario in dict.fromkeys(r.scenario for r in rows):
        stream = scenario.startswith("stream")
        lines += [f"### {scenario}", "",
                  "| target | requests | errors | p50 ms | p99 ms | added p50 ms | × LiteLLM "
                  "added | " + ("TTFT p50 ms | added TTFT ms | " if stream else "")
                  + "req/s | × LiteLLM | × direct | CPU ms/request |",
                  "|---" * (12 if stream else 10) + "|"]
        for row in (r for r in rows if r.scenario == scenario):
            errors = f"{row.errors} ({row.statuses})" if row.errors else "0"
            cells = [row.target, str(row.requests), errors, fmt(row.p50),
                     fmt(row.p99), fmt(added(scenario, row.target)),
                     ratio(added(scenario, row.target), added(scenario, LITELLM))]
            if stream:
                cells += [fmt(row.ttft), fmt(added(scenario, row.target, ttft=True))]
            cells += [fmt(row.rps, 0), ratio(row.rps, rps(scenario, LITELLM)),
                      ratio(row.rps, rps(scenario, DIRECT)), fmt(row.cpu_ms)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def _with(value: str, times: str) -> str:
    return value if times == "–" else f"{value} ({times})"


def _cpu(row: Row | None) -> float | None:
    return row.cpu_ms if row else None


def _errors(row: Row | None) -> int:
    return row.errors if row else -1


def _le(value: float | None, base: float | None, factor: float) -> bool:
    return value is not None and base is not None and value <= factor * base


def _ge(value: float | None, base: float | None, factor: float) -> bool:
    return value is not None and base is not None and value >= factor * base


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False,
                          capture_output=True,
                          text=True).stdout.strip() or "unknown"
