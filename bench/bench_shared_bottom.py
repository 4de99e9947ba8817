"""The instruction step with and without the judge's passes from the reader's bottom layers
(issue 16; ``vilmo.instruct.shared_bottom``), in one process, interleaved.

Builds the VILMO generator as the gateway does (the shipped request reader, ``stakes.npz``, the
judge's second look; no caches, so every call reads its prompt), connects the reader and the
judge, and times ``choose`` (the step less its cache lookups) on the benches' grievance
questions as `trace_first_token.py` sends them and the everyday dev prompts, each round with the
shortcut on and off in alternating order (the judge's session's ``shortcut`` set or cleared
between the two calls). Prints, per kind of prompt (which passes its step runs), the median wall
and thread-CPU milliseconds of both arms and the median paired difference, and checks that both
arms wrote the same instruction every time. Thread CPU time is the work done, whatever else
runs on the machine; wall time includes waiting for a core. A benchmark, not a test.

    python bench/bench_shared_bottom.py [--rounds 20] [--prompts 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections import defaultdict
from importlib import resources

from harness import prompts

from vilmo.instruct.generator import VilmoGenerator
from vilmo.instruct.principles import PrincipleBank
from vilmo.instruct.second_look import SecondLook
from vilmo.instruct.shared_bottom import connect
from vilmo.instruct.stakes import StakesModel
from vilmo.instruct.stakes_reader import StakesReader
from vilmo.judge.graph_files import cached_file
from vilmo.judge.value_model import BuiltinClassifier
from vilmo.judge.value_onnx import shared_session
from vilmo.policy_store import SHIPPED_POLICY_DIR, PolicyStore


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("Model name")), "unknown")


def texts(count: int) -> list[str]:
    """The grievance questions (as the trace sends them under `default-monitor`) and the
    everyday dev prompts."""
    folder = resources.files("vilmo").joinpath("data", "prompts")
    everyday = [json.loads(line) for line in folder.joinpath("everyday.jsonl").read_text(
        "utf-8").splitlines() if line.strip()]
    return ([p.replace("(case", "(default-monitor case") for p in prompts(count)]
            + [row["prompt"] for row in everyday if row["split"] == "dev"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=60)
    args = parser.parse_args()
    reader, judge = StakesReader(cache_size=0), BuiltinClassifier(cache_size=0)
    look = SecondLook(judge)
    generator = VilmoGenerator(PrincipleBank.load(), reader, StakesModel.load(),
                               second_look=look)
    policy = PolicyStore(SHIPPED_POLICY_DIR, "default", 0, check=generator.check).get("default")
    generator.prepare(policy)
    states = connect(reader, judge)
    assert states is not None, "the reader and the judge do not share their bottom here"
    session = shared_session(cached_file(judge.graph_path()) or judge.graph_path(),
                             judge.threads)
    shortcut = session.shortcut
    threshold = policy.instructions.stakes_threshold or generator.threshold
    prompts_ = texts(args.prompts)
    kinds = {}
    for text in prompts_:
        reading = generator.read(text)
        passes = ["reader"]
        if look.wanted(reading.gate, threshold):
            passes.append("second look")
        if generator.choose(text, policy).stakes:
            passes.append("embedding half")
        kinds[text] = " + ".join(passes)
    wall: dict[tuple[str, str], list[float]] = defaultdict(list)
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in range(args.rounds):
        for text in prompts_:
            written = []
            for arm in ("off", "on") if r % 2 == 0 else ("on", "off"):
                session.shortcut = shortcut if arm == "on" else None
                started, cpu_started = time.perf_counter(), time.thread_time()
                written.append(generator.choose(text, policy))
                cpu[(kinds[text], arm)].append((time.thread_time() - cpu_started) * 1000)
                wall[(kinds[text], arm)].append((time.perf_counter() - started) * 1000)
            assert written[0] == written[1], text
    session.shortcut = shortcut
    print(f"instruction step (`choose`, uncached), {args.rounds} rounds x {len(prompts_)} "
          f"prompts, {cpu_model()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; the same instruction in both arms every time\n")
    print("| prompts: passes | n | wall off | wall on | paired Δ | CPU off | CPU on | paired Δ |"
          "\n|---|---|---|---|---|---|---|---|")
    def of(table: dict[tuple[str, str], list[float]], kind: str, arm: str) -> list[float]:
        if kind != "all":
            return table[(kind, arm)]
        return [x for (k, a), xs in sorted(table.items()) if a == arm for x in xs]

    for kind in sorted({k for k, _ in wall}) + ["all"]:
        cells = [str(sum(1 for t in prompts_ if kind in ("all", kinds[t])))]
        for table in (wall, cpu):
            off, on = of(table, kind, "off"), of(table, kind, "on")
            cells += [f"{statistics.median(off):.2f}", f"{statistics.median(on):.2f}",
                      f"{statistics.median(b - a for a, b in zip(off, on, strict=True)):+.2f}"]
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
