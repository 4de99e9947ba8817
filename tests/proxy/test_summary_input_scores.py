"""The dashboard's compliance counts the input check's scores (``proxy.summary``).

Review r3 (t7): ``_scores`` read the input verdict at ``verdict["input"]``, but a record keeps
it beside the reply's, under ``input_verdict`` (``RequestRecord.to_json``). Under a policy that
checks only the input, 100 requests of which 10 violated ``mft.care`` showed ``checked: 10,
violated: 10, compliance: 0.0`` (only the violations, read from ``values``) instead of 0.9.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import Redactor
from proxy.outcome import Facts
from proxy.record import build_record
from proxy.store import AuditRecord
from proxy.summary import summarize
from proxy.trail import audit_record
from vilmo.policy import Action
from vilmo.verdict import Verdict, Violation

WEIGHTS = {"input-only": {"mft.care": 1.0}}


def record(i: int, violent: bool, reply: bool = False) -> AuditRecord:
    score = 0.95 if violent else 0.02
    hits = (Violation("mft.care", score, 0.5, Action.BLOCK),) if violent else ()
    verdict = Verdict({"mft.care": score}, hits, Action.BLOCK if violent else Action.ALLOW)
    facts = (Facts(model="stub", policy="input-only", reply=verdict) if reply else
             Facts(model="stub", policy="input-only", input=verdict, refused=violent))
    return audit_record(build_record(f"req-{i}", "team", 1000.0 + i, facts, "200"), None,
                        Redactor())


def test_input_only_records_count_in_compliance() -> None:
    records = [record(i, violent=i < 10) for i in range(100)]  # 10 of 100 inputs violate
    out: dict[str, Any] = summarize(records[::-1], WEIGHTS, 0, 2000, 3600)
    assert out["values"]["mft.care"] == {"checked": 100, "violated": 10, "compliance": 0.9}
    (radar,) = out["compass"]
    assert radar["alignment"] == 0.9


def test_input_and_reply_records_count_alike() -> None:
    records = ([record(i, violent=i < 5) for i in range(50)]
               + [record(i, violent=i < 55, reply=True) for i in range(50, 100)])
    out: dict[str, Any] = summarize(records[::-1], WEIGHTS, 0, 2000, 3600)
    assert out["values"]["mft.care"] == {"checked": 100, "violated": 10, "compliance": 0.9}
