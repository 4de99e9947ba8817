"""``bench/trace_request_path.py --rounds 1`` crashed (``statistics.median`` of no data): a
gateway appends a request's span only when the request's app returns, which can be after its
client read the last byte, and the traces were dumped at once, so the last request (the
``no policy, stream`` target of the last round) was missing and that target had no sample
past the warm-up rounds. Now the bench waits until every request is recorded, and a stage
with no sample is shown as ``n/a``."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
import trace_request_path


@dataclass
class LateRun:
    """A traced run whose gateway records its last request's span only after the first
    dump (as a stream's is, after its client has the last byte)."""

    work: Path
    trees: dict[str, Path]
    requests: int
    dumps: list[int] = field(default_factory=list)

    def dump_traces(self) -> None:
        recorded = self.requests - 1 if not self.dumps else self.requests
        self.dumps.append(recorded)
        events = [("gateway", float(i), float(i) + 0.5) for i in range(recorded)]
        (self.work / "this.json").write_text(json.dumps(events))


def test_the_traces_are_read_once_every_request_is_recorded(tmp_path: Path) -> None:
    rounds = 1 + trace_request_path.WARM_UP_ROUNDS
    requests = rounds * len(trace_request_path.TARGETS)
    run = LateRun(tmp_path, {"this": tmp_path}, requests)
    events = trace_request_path.dumped_events(run, requests)
    spans = [e for e in events["this"] if e[0] == "gateway"]
    assert len(spans) == requests, run.dumps
    stages = trace_request_path.stages(events["this"], "bare stream")
    assert len(stages["gateway"][trace_request_path.WARM_UP_ROUNDS:]) >= 1


def test_a_stage_without_samples_is_shown_not_a_crash() -> None:
    assert trace_request_path.median_cell([]) == "n/a"
    assert trace_request_path.median_cell([1.0, 3.0, 2.0]) == "2.00"
    assert trace_request_path.median_cell([-1.5], signed=True) == "-1.50"
    assert trace_request_path.median_cell([1.5], signed=True) == "+1.50"
