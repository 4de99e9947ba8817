"""The gateway's request record (and the request's trace) as an audit record: texts redacted,
then cut; replies paired with their verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.errors import Redactor
from proxy.record import RequestRecord
from proxy.settings import ConfigError, load_config
from proxy.stages import Trace
from proxy.trail import MAX_MESSAGES, audit_record

SECRET = "sk-upstream-secret-abcdef123456"


def make_record(**fields: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "req-1", "caller": "team-a", "model": "stub", "stream": False,
        "policy": "p", "generator": "", "principles": (), "stakes": (), "status": "200",
        "error_code": None, "started_at": 1.0, "instruction_s": 0.0, "duration_s": 0.1,
        "guard": "ok", "verdict": None, "input_verdict": None, "attempts": ()}
    return RequestRecord(**(base | fields))


def test_texts_are_redacted_before_they_are_cut_and_paired_with_their_verdicts() -> None:
    record = make_record(
        verdict={"action": "allow", "violations": [], "scores": {"mft.care": 0.1}},
        attempts=({"action": "regenerate", "violations": ["mft.care"], "scores": {}},))
    trace = Trace(prompt=[{"role": "user", "content": "x" * 3990 + SECRET}],  # the cut splits it
                  replies=["first " + SECRET, "y" * 10_000], tokens=48)
    out = audit_record(record, trace, Redactor([SECRET]))
    assert SECRET[:10] not in out.dumps()  # no part of the secret survives the cut
    assert out.data["prompt"] == [{"role": "user", "content": ("x" * 3990 + "[redacted]")[:4000]}]
    assert out.data["rejected"] == [{"text": "first [redacted]", "values": ["mft.care"]}]
    assert out.data["reply"] == {"text": "y" * 4000, "values": [], "truncated": True,
                                 "chars": 10_000}
    assert out.data["tokens"] == 48 and out.data["regenerations"] == 1
    assert (out.key, out.action, out.values) == ("team-a", "allow", ("mft.care",))


def test_a_failed_regeneration_stores_the_rejected_reply_as_rejected() -> None:
    """The regeneration's upstream call failed (the client got a 502): the one upstream reply
    was stored as the request's ``reply``, though it was regenerated away, and ``rejected``
    was empty. A retry that came back but whose check failed closed has an unchecked reply."""
    rejected = {"action": "regenerate", "violations": ["mft.care"], "scores": {}}
    record = make_record(status="502", error_code="upstream_error", guard="off",
                         attempts=(rejected,))
    out = audit_record(record, Trace(replies=["punch him"]), Redactor())
    assert out.data["rejected"] == [{"text": "punch him", "values": ["mft.care"]}]
    assert out.data["reply"] is None and out.data["regenerations"] == 1
    assert (out.action, out.values) == ("error", ("mft.care",))
    out = audit_record(record, Trace(replies=["punch him", "retried"]), Redactor())
    assert out.data["rejected"] == [{"text": "punch him", "values": ["mft.care"]}]
    assert out.data["reply"] == {"text": "retried", "values": []}
    unchecked = audit_record(make_record(guard="off"), Trace(replies=["hi"]), Redactor())
    assert (unchecked.data["reply"], unchecked.data["rejected"]) == (
        {"text": "hi", "values": []}, [])


def test_the_prompt_keeps_its_last_turns_and_input_blocks_are_filterable() -> None:
    record = make_record(input_verdict={"action": "block", "violations": ["mft.care"],
                                        "scores": {}})
    trace = Trace(prompt=[{"role": "user", "content": str(i)} for i in range(MAX_MESSAGES + 5)])
    out = audit_record(record, trace, Redactor())
    prompt = out.data["prompt"]
    assert isinstance(prompt, list) and len(prompt) == MAX_MESSAGES
    assert prompt[0]["content"] == "5"
    assert (out.action, out.values, out.data["reply"]) == ("block", ("mft.care",), None)
    assert audit_record(make_record(status="502"), None, Redactor()).action == "error"
    assert audit_record(make_record(), None, Redactor()).action == "none"


def test_vilmo_serve_refuses_a_redis_store_without_an_admin_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("model_list:\n  - {model_name: m, litellm_params: {model: openai/m}}\n"
                    "store: {url: 'redis://127.0.0.1:6379/0'}\n")
    with pytest.raises(ConfigError, match="auth.admin_key is required"):
        load_config(path)


def test_each_choice_keeps_its_own_text_and_values() -> None:
    """``n > 1``: the trail kept the first choice's text and labelled it with the worst
    choice's violations (the calm choice became a ``mft.care`` violation in the negatives
    export). Each choice is now kept with its own verdict; the reply's ``text`` and ``values``
    are its worst choice's, cut once and counted once against the record's budget."""
    calm = {"action": "allow", "violations": [], "scores": {"mft.care": 0.1}}
    bad = {"action": "block", "violations": ["mft.care"], "scores": {"mft.care": 0.9}}
    annotated = {"action": "annotate", "violations": ["mft.fairness"], "scores": {}}
    worst = {"action": "block", "violations": ["mft.care", "mft.fairness"], "scores": {},
             "choices": {"0": calm, "1": bad, "2": annotated}}
    texts = {0: "be kind " + SECRET, 1: "stab " * 1000, 2: "cheat"}
    trace = Trace(prompt=[{"role": "user", "content": "hi"}], replies=[texts[0]],
                  choices={0: texts})
    out = audit_record(make_record(verdict=worst), trace, Redactor([SECRET]), max_chars=3000,
                       max_record_chars=3010)
    cut = {"truncated": True, "chars": 5000}
    assert out.data["reply"] == {
        "text": ("stab " * 1000)[:3000], "values": ["mft.care"], **cut, "index": 1,
        "choices": [{"index": 0, "text": "be ki", "values": [], "truncated": True,
                     "chars": 18},
                    {"index": 1, "text": ("stab " * 1000)[:3000], "values": ["mft.care"], **cut},
                    {"index": 2, "text": "cheat", "values": ["mft.fairness"]}]}
    assert out.data["prompt"] == [{"role": "user", "content": "", "truncated": True,
                                   "chars": 2}]  # the worst choice first, then the others
    assert SECRET[:10] not in out.dumps()
    unchecked = audit_record(make_record(guard="off"), Trace(replies=["a"],
                                                             choices={0: {0: "a", 1: "b"}}),
                             Redactor())
    reply = unchecked.data["reply"]
    assert isinstance(reply, dict) and reply["choices"] == [
        {"index": 0, "text": "a", "values": []}, {"index": 1, "text": "b", "values": []}]
