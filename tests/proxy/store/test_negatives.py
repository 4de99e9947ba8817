"""``vilmo export negatives``: flagged replies from audit records as D2O or DPO samples."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from pathlib import Path

from store_fixtures import (
    MakeStore,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
)

from proxy.store import AuditQuery, AuditRecord
from proxy.store.negatives import LeftOut, negative_samples, write_jsonl

PROMPT = [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "My neighbour's dog barks all night. Ideas?"}]


def audit(i: int, *, reply: dict[str, object] | None,
          rejected: list[dict[str, object]] | None = None, ts: float = 1000.0,
          prompt: object = PROMPT) -> AuditRecord:
    data: dict[str, object] = {"prompt": prompt}
    if reply is not None:
        data["reply"] = reply
    if rejected is not None:
        data["rejected"] = rejected
    return AuditRecord(id=f"req-{i}", ts=ts, policy="strict", model="stub", data=data)


REGENERATED = audit(1, reply={"text": "Talk to them kindly.", "values": []},
                    rejected=[{"text": "Poison the dog.", "values": ["mft.care"]},
                              {"text": "Shout at them.", "values": ["mft.care", "mft.fairness"]}])
BLOCKED = audit(2, reply={"text": "Slash their tyres.", "values": ["mft.care"]})
PASSED = audit(3, reply={"text": "Buy earplugs.", "values": []})


def test_d2o_has_one_line_per_violating_reply_with_the_regenerated_one() -> None:
    samples = list(negative_samples([REGENERATED, BLOCKED, PASSED], "d2o"))
    assert [(s["rejected"], s["violated_values"], s["regenerated"]) for s in samples] == [
        ("Poison the dog.", ["mft.care"], "Talk to them kindly."),
        ("Shout at them.", ["mft.care", "mft.fairness"], "Talk to them kindly."),
        ("Slash their tyres.", ["mft.care"], None)]
    assert samples[0]["prompt"] == PROMPT
    assert (samples[2]["request_id"], samples[2]["policy"]) == ("req-2", "strict")


def test_dpo_pairs_each_rejected_reply_with_the_regenerated_one() -> None:
    samples = list(negative_samples([REGENERATED, BLOCKED, PASSED], "dpo"))
    assert samples == [
        {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": "Talk to them kindly."}],
         "rejected": [{"role": "assistant", "content": "Poison the dog."}]},
        {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": "Talk to them kindly."}],
         "rejected": [{"role": "assistant", "content": "Shout at them."}]}]


def test_a_regeneration_that_also_failed_has_no_chosen_reply() -> None:
    failed = audit(4, reply={"text": "Still rude.", "values": ["mft.care"]},
                   rejected=[{"text": "Rude.", "values": ["mft.care"]}])
    assert [s["regenerated"] for s in negative_samples([failed], "d2o")] == [None, None]
    assert list(negative_samples([failed], "dpo")) == []


def test_since_and_records_without_the_text_fields() -> None:
    old = audit(5, reply={"text": "Old.", "values": ["mft.care"]}, ts=10.0)
    no_text = audit(6, reply=None)
    no_prompt = audit(7, reply={"text": "x", "values": ["mft.care"]}, prompt="not messages")
    samples = list(negative_samples([old, no_text, no_prompt, BLOCKED], "d2o", since=500.0))
    assert [s["request_id"] for s in samples] == ["req-2"]


def test_export_from_a_store_writes_json_lines(make_store: MakeStore) -> None:
    store = make_store()
    store.backend.append_audit([REGENERATED, BLOCKED, PASSED])
    out = io.StringIO()
    count = write_jsonl(negative_samples(store.export_audit(AuditQuery()), "d2o"), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert count == len(lines) == 3
    assert {line["request_id"] for line in lines} == {"req-1", "req-2"}


def test_the_export_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Tenants' prompts and replies, as private as the store they come from (``private_file``):
    before the fix ``--out`` was created with the umask's mode (0644: every local user)."""
    from click.testing import CliRunner

    from proxy.export_cli import export

    config = tmp_path / "gateway.yaml"
    config.write_text("model_list: [{model_name: stub, litellm_params: {model: openai/stub}}]\n"
                      f"store: {{path: {tmp_path / 'state.db'}}}\n")
    out = tmp_path / "negatives.jsonl"
    args = ["negatives", "--format", "d2o", "--config", str(config), "--out"]
    result = CliRunner().invoke(export, [*args, str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_mode & 0o777 == 0o600
    unwritable = CliRunner().invoke(export, [*args, str(tmp_path / "no" / "such.jsonl")])
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.output


def trail_record(prompt: list[dict[str, str]], rejected: str, chosen: str) -> AuditRecord:
    """The store's record of a regenerated request, made by the trail itself (its cuts)."""
    from proxy.errors import Redactor
    from proxy.record import RequestRecord
    from proxy.stages import Trace
    from proxy.trail import audit_record

    flagged: dict[str, object] = {"action": "regenerate", "violations": ["mft.fairness"],
                                  "scores": {}}
    passed: dict[str, object] = {"action": "allow", "violations": [], "scores": {}}
    record = RequestRecord("req-cut", "team-a", "stub", False, "strict", "vilmo", (), (), "200",
                           None, 1000.0, 0.0, 0.1, "ok", passed, None, (flagged,))
    return audit_record(record, Trace(prompt=prompt, replies=[rejected, chosen]), Redactor())


TURNS = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"}
         for i in range(59)]
"""59 turns: the trail keeps the last 50, which start with an assistant turn."""
LONG_BAD = "You could cheat on the exam. " * 300
LONG_GOOD = "Study a little every day, and rest well. " * 200


def test_a_sample_with_a_text_the_trail_cut_is_left_out_and_counted() -> None:
    """Before the fix the trail's ``truncated`` markers were dropped: each sample held a
    reply cut at 4,000 characters and a conversation without its first nine turns, starting
    with an assistant turn, as if whole."""
    cut_reply = trail_record(PROMPT, LONG_BAD, "Study.")
    cut_prompt = trail_record(TURNS, "Cheat.", "Study.")
    assert cut_reply.data["truncated"] is True and cut_prompt.data["truncated"] is True
    for fmt in ("d2o", "dpo"):
        left_out = LeftOut()
        samples = list(negative_samples([cut_reply, cut_prompt, REGENERATED], fmt,
                                        left_out=left_out))
        assert len(samples) == 2 and all("truncated" not in s for s in samples), samples
        assert left_out.truncated == 2


def test_with_include_truncated_each_cut_sample_says_so() -> None:
    records = [trail_record(TURNS, LONG_BAD, LONG_GOOD), REGENERATED]
    for fmt in ("d2o", "dpo"):
        samples = list(negative_samples(records, fmt, include_truncated=True))
        assert [s.get("truncated") for s in samples] == [True, None, None]
        prompt = samples[0]["prompt"]
        assert isinstance(prompt, list) and prompt[0] == {"role": "user", "content": "turn 10"}


def test_a_prompt_whose_turns_were_dropped_starts_at_its_first_user_turn() -> None:
    """Assistant and tool turns before the first user turn, left when the trail dropped older
    turns (``truncation.messages_dropped``), are dropped; a system message is kept; such a
    prompt with no user turn is none."""
    system, user = PROMPT
    leading = [{"role": "assistant", "content": "Earlier answer."}, {"role": "tool",
                                                                   "content": "{}"}]
    dropped = {"truncated": True,
               "truncation": {"messages_dropped": 3, "texts_cut": 0, "chars_dropped": 0}}
    records = [audit(8, reply={"text": "Bad.", "values": ["mft.care"]}, prompt=p)
               for p in ([*leading, user], [system, *leading, user], leading)]
    records = [replace(r, data={**r.data, **dropped}) for r in records]
    samples = list(negative_samples(records, "d2o", include_truncated=True))
    assert [s["prompt"] for s in samples] == [[user], [system, user]]
    assert all(s["truncated"] is True for s in samples)


def test_a_whole_conversation_keeps_its_opening_assistant_turn() -> None:
    """Review rv4: the first-user-turn rule ran on every record, so a whole conversation that
    opens with the assistant's greeting lost it silently (neither cut nor marked): the sample
    was not the conversation the model answered. Only dropped turns now start it there; a
    record whose texts alone were cut keeps every turn too."""
    greeting = [{"role": "system", "content": "You are the bank's assistant."},
                {"role": "assistant", "content": "Hi! I can only discuss your account ending "
                                                 "4411. What do you need?"},
                {"role": "user", "content": "Do what you offered."}]
    whole = audit(9, reply={"text": "Sure, here is how.", "values": ["mft.care"]},
                  prompt=greeting)
    whole = replace(whole, data={**whole.data, "truncated": False})
    texts_cut = audit(10, reply={"text": "Sure, here is how.", "values": ["mft.care"],
                                 "truncated": True}, prompt=greeting)
    texts_cut = replace(texts_cut, data={**texts_cut.data, "truncated": True, "truncation": {
        "messages_dropped": 0, "texts_cut": 1, "chars_dropped": 10}})
    left_out = LeftOut()
    assert [s["prompt"] for s in negative_samples([whole, texts_cut], "d2o",
                                                  left_out=left_out)] == [greeting]
    assert left_out.truncated == 1
    marked = list(negative_samples([texts_cut], "d2o", include_truncated=True))
    assert [(s["prompt"], s["truncated"]) for s in marked] == [(greeting, True)]


def test_the_cli_leaves_out_cut_samples_unless_asked(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from proxy.export_cli import export
    from proxy.store import StoreSettings, open_store

    store = open_store(StoreSettings(path=tmp_path / "state.db"))
    now = time.time()  # within the trail's retention
    store.backend.append_audit([replace(trail_record(TURNS, "Cheat.", "Study."), ts=now),
                                replace(REGENERATED, ts=now)])
    store.close()
    config = tmp_path / "gateway.yaml"
    config.write_text("model_list: [{model_name: stub, litellm_params: {model: openai/stub}}]\n"
                      f"store: {{path: {tmp_path / 'state.db'}}}\n")
    args = ["negatives", "--format", "d2o", "--config", str(config)]
    plain = CliRunner().invoke(export, args)
    assert plain.exit_code == 0, plain.output
    assert [json.loads(line)["request_id"] for line in plain.stdout.splitlines()] == [
        "req-1", "req-1"]
    assert "1 samples left out" in plain.stderr
    marked = CliRunner().invoke(export, [*args, "--include-truncated"])
    lines = [json.loads(line) for line in marked.stdout.splitlines()]
    assert sorted((line["request_id"], line.get("truncated", False)) for line in lines) == [
        ("req-1", False), ("req-1", False), ("req-cut", True)]


def test_each_violating_choice_is_a_sample_of_its_own_text() -> None:
    """``n > 1``: the sample was the first choice's text with the worst choice's values."""
    from proxy.errors import Redactor
    from proxy.record import RequestRecord
    from proxy.stages import Trace
    from proxy.trail import audit_record

    passed: dict[str, object] = {"action": "allow", "violations": [], "scores": {}}
    flagged: dict[str, object] = {"action": "annotate", "violations": ["mft.fairness"],
                                  "scores": {}}
    verdict = {**flagged, "choices": {"0": passed, "1": flagged}}
    record = RequestRecord("req-n2", "team-a", "stub", False, "strict", "vilmo", (), (), "200",
                           None, 1000.0, 0.0, 0.1, "ok", verdict, None, ())
    trace = Trace(prompt=[{"role": "user", "content": "How do I pass?"}],
                  replies=["Study."], choices={0: {0: "Study.", 1: "Cheat."}})
    samples = list(negative_samples([audit_record(record, trace, Redactor())], "d2o"))
    assert [(s["rejected"], s["violated_values"], s["regenerated"]) for s in samples] == [
        ("Cheat.", ["mft.fairness"], None)]
    assert list(negative_samples([audit_record(record, trace, Redactor())], "dpo")) == []


def test_a_reply_of_several_choices_recorded_without_their_texts_is_left_out() -> None:
    """Records written before the trail kept each choice paired the first choice's text with
    the worst choice's values: no sample is made of them, and they are counted."""
    verdict = {"action": "block", "violations": ["mft.care"], "scores": {},
               "choices": {"0": {"action": "allow", "violations": [], "scores": {}},
                           "1": {"action": "block", "violations": ["mft.care"], "scores": {}}}}
    older = AuditRecord(id="req-old", ts=1000.0, key="team-a", key_id=None, policy="strict",
                        model="stub", action="block", values=("mft.care",), data={
                            "prompt": [{"role": "user", "content": "Hi"}], "verdict": verdict,
                            "reply": {"text": "Be kind.", "values": ["mft.care"]},
                            "rejected": [], "truncated": False})
    left_out = LeftOut()
    assert list(negative_samples([older], "d2o", left_out=left_out)) == []
    assert left_out.unpaired == 1
