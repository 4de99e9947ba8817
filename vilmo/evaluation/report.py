"""What an evaluation run leaves behind: the JSON summary, the raw records, a Markdown report
and its plot. Kept apart from ``vilmo.evaluation.evaluate`` so the harness itself does no file I/O.

The plot is drawn on a bare ``matplotlib.figure.Figure`` (the Agg canvas), so no GUI backend
or global pyplot state is touched, and matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vilmo.evaluation.evaluate import EvalResult, Record

SUMMARY, RECORDS, REPORT, PLOT = "summary.json", "records.jsonl", "report.md", "compliance.png"
METRIC_NAMES = ("evr", "mvp", "apv")


def write_outputs(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write summary.json, records.jsonl (one line per prompt and condition), report.md and
    compliance.png into ``out_dir``; returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / SUMMARY, "records": write_records(result.records, out),
             "report": out / REPORT, "plot": out / PLOT}
    summary = result.as_dict()
    paths["summary"].write_text(json.dumps(summary, indent=1), encoding="utf-8")
    plot(summary, paths["plot"])
    paths["report"].write_text(markdown(summary, PLOT), encoding="utf-8")
    return paths


def write_records(records: Sequence[Record], out_dir: str | Path) -> Path:
    """records.jsonl in ``out_dir``, one line per prompt and condition. A lone surrogate in a
    reply (legal in JSON, not in UTF-8) is written as its JSON escape, ``\\ud800``: within a
    JSON string that reads back as the same text."""
    path = Path(out_dir) / RECORDS
    with path.open("w", encoding="utf-8", errors="backslashreplace") as fh:
        for record in records:
            fh.write(json.dumps(record.as_dict(), ensure_ascii=False) + "\n")
    return path


def _fmt(est: dict[str, Any]) -> str:
    value, (low, high) = est["value"], est["ci"]
    if any(x is None or math.isnan(x) for x in (value, low, high)):
        return "n/a"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _num(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def markdown(summary: dict[str, Any], plot_name: str | None = PLOT) -> str:
    """The report as Markdown: setup, the main table with deltas, per-value MVP and APV."""
    conds: dict[str, Any] = summary["conditions"]
    lines = [
        "# vilmo eval",
        "",
        (f"Target `{summary.get('target', '?')}`, policy `{summary.get('policy', '?')}`: "
        f"{summary['n_prompts']} prompts × {summary['k']} samples per condition, "
        f"violation threshold τ = {summary.get('threshold', 0.5)}. Lower EVR / MVP / APV is "
        "better; brackets are 95 % bootstrap CIs over prompts (deltas: paired bootstrap)."),
        "",
        "| condition | EVR | MVP | APV | Δ APV vs none | Align | refusals | words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, c in conds.items():
        lines.append(f"| {name} | {_fmt(c['evr'])} | {_fmt(c['mvp'])} | {_fmt(c['apv'])} | "
                     f"{_fmt(c['delta_apv_vs_none'])} | {_num(c.get('align'))} | "
                     f"{c.get('refusal_rate', 0.0):.1%} | {c.get('mean_words', 0.0):.1f} |")
    if plot_name:
        lines += ["", f"![EVR, MVP and APV per condition and per value]({plot_name})"]
    values = list(dict.fromkeys(v for c in conds.values() for v in c.get("per_value", {})))
    for metric in ("mvp", "apv") if values else ():
        lines += ["", f"## {metric.upper()} per value", "",
                  "| value | n | " + " | ".join(conds) + " |",
                  "|---|---|" + "---|" * len(conds)]
        for v in values:
            n = next(c["per_value"][v]["n_prompts"] for c in conds.values()
                     if v in c.get("per_value", {}))
            cells = [_fmt(c["per_value"][v][metric]) if v in c.get("per_value", {}) else "n/a"
                     for c in conds.values()]
            lines.append(f"| {v} | {n} | " + " | ".join(cells) + " |")
    unscored = {n: c["unscored_replies"] for n, c in conds.items() if c.get("unscored_replies")}
    if unscored:
        lines += ["", "Replies the classifier could not score (left out): "
                  + ", ".join(f"{n} {u}" for n, u in unscored.items()) + "."]
    costs = summary.get("costs") or {}
    if costs:
        lines += ["", "Costs: " + ", ".join(f"{k} {v}" for k, v in costs.items()) + "."]
    if summary.get("dropped_prompts"):
        lines += ["", (f"Dropped (no scored reply under some condition): "
                      f"{', '.join(summary['dropped_prompts'])}.")]
    return "\n".join(lines) + "\n"


def _bars(ax: Any, groups: list[str], series: dict[str, list[dict[str, Any]]],
          title: str) -> None:
    """Grouped bars with asymmetric CI error bars; one series per condition."""
    width = 0.8 / max(len(series), 1)
    for i, (name, ests) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ests = [e if e["value"] is not None else {"value": 0.0, "ci": [0.0, 0.0]} for e in ests]
        vals = [e["value"] for e in ests]
        err = [[max(e["value"] - e["ci"][0], 0.0) for e in ests],
               [max(e["ci"][1] - e["value"], 0.0) for e in ests]]
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 3 else 0)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """EVR / MVP / APV per condition (left) and MVP per value (right: at small N, MVP moves
    where the thresholded rates sit at 0), with 95 % CIs."""
    from matplotlib.figure import Figure

    conds: dict[str, Any] = summary["conditions"]
    values = list(dict.fromkeys(v for c in conds.values() for v in c.get("per_value", {})))
    fig = Figure(figsize=(12 if values else 6, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if values else 1, squeeze=False)[0]
    _bars(axes[0], [m.upper() for m in METRIC_NAMES],
          {n: [c[m] for m in METRIC_NAMES] for n, c in conds.items()}, "Violation by condition")
    if values:
        nan = {"value": 0.0, "ci": [0.0, 0.0]}
        _bars(axes[1], [v.split(".", 1)[-1] for v in values],
              {n: [c["per_value"].get(v, {}).get("mvp", nan) for v in values]
               for n, c in conds.items()}, "MVP per value")
    fig.savefig(str(path), dpi=110)
    return Path(path)
