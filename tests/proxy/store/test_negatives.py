"""``vilmo export negatives``: flagged replies from audit records as D2O or DPO samples."""

from __future__ import annotations

import io
import json
from pathlib import Path

from store_fixtures import (
    MakeStore,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
)

from proxy.store import AuditQuery, AuditRecord
from proxy.store.negatives import negative_samples, write_jsonl

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
