"""The VILMO training loop: learn which instruction makes one target model misbehave least.

For each training prompt: retrieve candidates (principle × style, ``vilmo.instruct.candidates``),
ask the target K times under each candidate instruction (concurrently, rate-limited, retried: any
``Sampler``, normally ``vilmo.evaluation.target.TargetClient``), score every reply with the value
classifier, and append (prompt, candidate, replies, scores) to ``records.jsonl`` in the run
directory. A rerun skips the (prompt, candidate) pairs already recorded, so a crashed run
resumes where it stopped. ``vilmo.train.scorer_fit`` then fits the per-target scorer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vilmo.evaluation.target import Costs, TargetError
from vilmo.instruct.candidates import Candidate, Retriever
from vilmo.instruct.instructions import apply_instruction, compose
from vilmo.instruct.principles import STYLES
from vilmo.judge.classifier import ScoreInput, ValueClassifier
from vilmo.policy import Policy
from vilmo.types import Messages

log = logging.getLogger(__name__)
RECORDS = "records.jsonl"
RUN_FILE = "run.json"


class Sampler(Protocol):
    """K replies of the target for one conversation (``TargetClient`` is one)."""

    costs: Costs

    async def sample(self, messages: Messages, k: int) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class LoopSettings:
    k: int = 4
    """Replies sampled per (prompt, candidate)."""
    candidates: int = 12
    """Candidate instructions (principle × style pairs) tried per prompt."""
    pairs_in_flight: int = 16
    """(prompt, candidate) pairs worked on at once (the sampler bounds HTTP concurrency)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One (prompt, candidate) pair and what the target made of it."""

    prompt_id: str
    prompt: str
    candidate: str
    principle: str
    style: str
    instruction: str
    replies: list[str]
    scores: list[dict[str, float]]


@dataclass(slots=True)
class LoopSummary:
    pairs_done: int = 0
    pairs_skipped: int = 0
    pairs_failed: int = 0
    costs: dict[str, int] = field(default_factory=dict)


def prompt_id(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]


def reply_violation(scores: Mapping[str, float], policy: Policy) -> float:
    """How badly one reply went: the largest policy-weighted violation over the policy's values."""
    return max((policy.weight_of(v) * s for v, s in scores.items() if v in policy.values),
               default=0.0)


def read_records(run_dir: Path) -> Iterator[Record]:
    """Recorded pairs; a torn last line (a crash mid-write) is ignored."""
    path = run_dir / RECORDS
    if not path.exists():
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield Record(**json.loads(line))
            except (json.JSONDecodeError, TypeError):
                log.warning("skipping an unreadable line in %s", path)


def candidates_for(retriever: Retriever, prompt: str, policy: Policy,
                   budget: int) -> list[Candidate]:
    """The first ``budget`` candidates for a prompt, best principles first, all styles each."""
    principles = -(-budget // len(STYLES))
    return list(retriever.retrieve(prompt, policy, principles).candidates[:budget])


async def collect(prompts: Sequence[str], policy: Policy, retriever: Retriever,
                  sampler: Sampler, classifier: ValueClassifier, run_dir: Path,
                  settings: LoopSettings = LoopSettings(), progress: bool = True) -> LoopSummary:
    """Sample and score every (prompt, candidate) pair not yet recorded in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    done = {(r.prompt_id, r.candidate) for r in read_records(run_dir)}
    summary = LoopSummary()
    todo: list[tuple[str, Candidate]] = []
    for prompt in dict.fromkeys(prompts):
        for c in candidates_for(retriever, prompt, policy, settings.candidates):
            if (prompt_id(prompt), c.key) in done:
                summary.pairs_skipped += 1
            else:
                todo.append((prompt, c))
    value_ids = list(policy.values)
    gate = asyncio.Semaphore(settings.pairs_in_flight)
    stop = asyncio.Event()
    bar = _progress(len(todo), progress)
    _end_torn_line(run_dir / RECORDS)
    with (run_dir / RECORDS).open("a", encoding="utf-8") as out:
        async def one(prompt: str, c: Candidate) -> None:
            async with gate:
                if stop.is_set():
                    return
                try:
                    record = await _pair(prompt, c, policy, sampler, classifier, value_ids,
                                         settings.k)
                except TargetError as exc:
                    summary.pairs_failed += 1
                    log.warning("target failed for a pair (retried on resume): %s", exc)
                    return
                except BaseException:
                    stop.set()  # let pairs in flight finish and be recorded, start no more
                    raise
                out.write(json.dumps(asdict(record)) + "\n")
                out.flush()
                summary.pairs_done += 1
                bar.update(1)

        try:
            results = await asyncio.gather(*(one(p, c) for p, c in todo), return_exceptions=True)
        finally:
            bar.close()
    summary.costs = sampler.costs.as_dict()
    _log_run(run_dir, summary)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return summary


async def _pair(prompt: str, c: Candidate, policy: Policy, sampler: Sampler,
                classifier: ValueClassifier, value_ids: list[str], k: int) -> Record:
    """Sample the target under one candidate instruction and score its replies."""
    instruction = compose([c.principle], c.style, "vilmo-candidate")
    messages = apply_instruction([{"role": "user", "content": prompt}], instruction,
                                 policy.instructions.placement)
    replies = await sampler.sample(messages, k)
    scored = await asyncio.to_thread(classifier.score, [ScoreInput(r, prompt) for r in replies],
                                     value_ids)
    return Record(prompt_id(prompt), prompt, c.key, c.principle.id, c.style, instruction.text,
                  replies, [{v: round(float(s), 5) for v, s in x.violation.items()}
                            for x in scored])


def _end_torn_line(path: Path) -> None:
    """After a crash mid-write, start the next record on a line of its own."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as fh:
            fh.seek(-1, 2)
            torn = fh.read(1) != b"\n"
        if torn:
            with path.open("a", encoding="utf-8") as fh:
                fh.write("\n")


def _log_run(run_dir: Path, summary: LoopSummary) -> None:
    """Append this run's counts to run.json, and keep the totals over every run."""
    path = run_dir / RUN_FILE
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    runs = [*state.get("runs", []), {"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime()), **asdict(summary)}]
    totals: dict[str, int] = {}
    for run in runs:
        for key, value in run["costs"].items():
            totals[key] = totals.get(key, 0) + value
    path.write_text(json.dumps({**state, "runs": runs, "total_costs": totals}, indent=2) + "\n")


def write_settings(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Record what the run was started with; a resume with other settings is refused."""
    path = run_dir / RUN_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    before = state.get("settings")
    if before and {k: before.get(k) for k in ("target", "k", "policy")} != {
            k: settings.get(k) for k in ("target", "k", "policy")}:
        raise ValueError(f"{run_dir} holds a run with other settings ({before}); "
                         "use another --run-dir")
    path.write_text(json.dumps({**state, "settings": dict(settings)}, indent=2) + "\n")


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, show: bool) -> Any:
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="pairs", unit="pair")


def load_prompts(spec: str, data_root: Path | None = None) -> list[str]:
    """Training prompts: a prompt file or a named set of ``vilmo.evaluation.prompts``
    (``moral-stories:train``, ``saferlhf:train[:N]``, ...), as the text of each prompt's last user
    turn."""
    from vilmo.evaluation.prompts import load_prompt_set

    return [p.text for p in load_prompt_set(spec, data_root) if p.text.strip()]
