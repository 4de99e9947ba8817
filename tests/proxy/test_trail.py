"""The gateway's request record as an audit record: texts redacted, then cut."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.audit import RequestRecord
from proxy.errors import Redactor
from proxy.settings import ConfigError, load_config
from proxy.trail import MAX_MESSAGES, audit_record

SECRET = "sk-upstream-secret-abcdef123456"


def test_texts_are_redacted_before_they_are_cut() -> None:
    record = RequestRecord(request_id="req-1", caller="team-a", model="stub", policy="p",
                           status="200")
    record.prompt = [{"role": "user", "content": "x" * 3990 + SECRET}]  # the cut splits it
    record.replies = [{"text": "first " + SECRET, "values": ["mft.care"]},
                      {"text": "y" * 10_000, "values": []}]
    record.verdict = {"action": "allow", "violations": [], "scores": {"mft.care": 0.1}}
    out = audit_record(record, Redactor([SECRET]))
    text = out.dumps()
    assert SECRET[:10] not in text  # no part of the secret survives the cut
    assert out.data["prompt"] == [{"role": "user", "content": ("x" * 3990 + "[redacted]")[:4000]}]
    assert out.data["rejected"] == [{"text": "first [redacted]", "values": ["mft.care"]}]
    assert out.data["reply"] == {"text": "y" * 4000, "values": []}
    assert (out.key, out.action, out.values) == ("team-a", "allow", ())


def test_the_prompt_keeps_its_last_turns_and_input_blocks_are_filterable() -> None:
    record = RequestRecord(request_id="req-2", caller="c", status="200")
    record.prompt = [{"role": "user", "content": str(i)} for i in range(MAX_MESSAGES + 5)]
    record.verdict = {"input": {"action": "block", "violations": ["mft.care"], "scores": {}}}
    out = audit_record(record, Redactor())
    prompt = out.data["prompt"]
    assert isinstance(prompt, list) and len(prompt) == MAX_MESSAGES
    assert prompt[0]["content"] == "5"
    assert (out.action, out.values) == ("block", ("mft.care",))
    failed = audit_record(RequestRecord(request_id="req-3", caller="c", status="502"),
                          Redactor())
    assert failed.action == "error"


def test_vilmo_serve_refuses_a_redis_store_without_an_admin_key(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("model_list:\n  - {model_name: m, litellm_params: {model: openai/m}}\n"
                    "store: {url: 'redis://127.0.0.1:6379/0'}\n")
    with pytest.raises(ConfigError, match="auth.admin_key is required"):
        load_config(path)
