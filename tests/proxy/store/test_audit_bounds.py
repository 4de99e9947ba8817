"""Each audit record is bounded, whatever the request: texts redacted, then cut per text and
per record, every cut said in the record; the trail keeps a bounded number of records by
default. A client with a key once made each record about 230 KB (50 messages of 4,000
characters; 1.3 MB with control characters, which JSON writes as six bytes) and could fill the
store (/tmp/ff/measure_audit_record.py); one lone surrogate made the whole record ASCII-escaped
(an emoji twelve bytes), 196 KB even with the texts cut."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from store_fixtures import (
    SHARED_REDIS,
    MakeStore,
    RedisProcess,
    backend_fixture,  # noqa: F401 - a fixture
    make_store_fixture,  # noqa: F401 - a fixture
    own_redis_fixture,  # noqa: F401 - a fixture
)

from proxy.errors import Redactor
from proxy.record import RequestRecord
from proxy.stages import Trace
from proxy.store import (
    AuditQuery,
    AuditRecord,
    LimitDecision,
    StoreSettings,
    StoreUnavailable,
    open_store,
)
from proxy.store.negatives import negative_samples
from proxy.trail import MAX_MESSAGES, MAX_RECORD_CHARS, MAX_TEXT_CHARS, audit_record

SECRET = "sk-upstream-secret-abcdef123456"
RECORD_BYTES = 6 * MAX_RECORD_CHARS + 16_000
"""The most one record may take stored: its texts' budget at JSON's worst (six bytes a
character), and room for the rest of the record."""


def make_record(**fields: Any) -> RequestRecord:
    base: dict[str, Any] = {
        "request_id": "req-1", "caller": "team-a", "model": "stub", "stream": False,
        "policy": "p", "generator": "", "principles": (), "stakes": (), "status": "200",
        "error_code": None, "started_at": 1.0, "instruction_s": 0.0, "duration_s": 0.1,
        "guard": "ok", "verdict": {"action": "allow", "violations": [], "scores": {}},
        "input_verdict": None, "attempts": ()}
    return RequestRecord(**(base | fields))


def regenerated(times: int) -> tuple[dict[str, object], ...]:
    return tuple({"action": "regenerate", "violations": ["mft.care"], "scores": {}}
                 for _ in range(times))


def huge_trace(text: str, messages: int = 60, replies: int = 6) -> Trace:
    return Trace(prompt=[{"role": "user" if i % 2 else "assistant", "content": f"{i}:{text}"}
                         for i in range(messages)],
                 replies=[f"r{i}:{text}" for i in range(replies)])


def test_a_huge_request_makes_a_bounded_record_that_says_what_was_cut() -> None:
    for text in ("x" * 10_000, "\x01" * 10_000, "\U0001F600" * 10_000,
                 "\ud800" + "\U0001F600" * 9_999):
        out = audit_record(make_record(attempts=regenerated(5)), huge_trace(text), Redactor())
        assert len(out.dumps().encode()) <= RECORD_BYTES
        assert AuditRecord.loads(out.dumps()).dumps() == out.dumps()  # read back as it was
        data = out.data
        prompt, rejected, reply = data["prompt"], data["rejected"], data["reply"]
        assert isinstance(prompt, list) and isinstance(rejected, list) and isinstance(reply, dict)
        kept = [m["content"] for m in prompt] + [r["text"] for r in [*rejected, reply]]
        assert sum(map(len, kept)) == MAX_RECORD_CHARS
        assert data["truncated"] is True
        assert data["truncation"] == {
            "messages_dropped": 60 - MAX_MESSAGES, "texts_cut": MAX_MESSAGES + 6,
            "chars_dropped": (MAX_MESSAGES + 6) * 10_003 - MAX_RECORD_CHARS}
        # what the client got and asked is kept first, every turn keeps its place and role
        assert reply == {"text": f"r5:{text}"[:MAX_TEXT_CHARS], "values": [],
                         "truncated": True, "chars": 10_003}
        assert prompt[-1]["content"] == f"59:{text}"[:MAX_TEXT_CHARS]
        assert rejected[0]["text"] == f"r0:{text}"[:MAX_TEXT_CHARS]
        assert len(prompt) == MAX_MESSAGES and prompt[0]["role"] == "assistant"
        assert prompt[0] == {"role": "assistant", "content": "", "truncated": True,
                             "chars": 10_003}
        assert all(m["truncated"] is True and m["chars"] == 10_003 for m in prompt)


def test_the_record_budget_cuts_redacted_text_so_no_part_of_a_secret_survives() -> None:
    """The budget runs out 12 characters into a message that starts with a secret: cut before
    redaction it would keep ``sk-upstream-``."""
    assert MAX_RECORD_CHARS == 4 * MAX_TEXT_CHARS  # the reply and three turns fill it but 12
    trace = Trace(prompt=[{"role": "user", "content": SECRET + "z" * 100},
                          {"role": "user", "content": "w" * (MAX_TEXT_CHARS - 12)},
                          {"role": "user", "content": "v" * MAX_TEXT_CHARS},
                          {"role": "user", "content": "u" * MAX_TEXT_CHARS}],
                  replies=["y" * MAX_TEXT_CHARS])
    out = audit_record(make_record(), trace, Redactor([SECRET]))
    assert SECRET[:12] not in out.dumps() and SECRET[-8:] not in out.dumps()
    prompt = out.data["prompt"]
    assert isinstance(prompt, list)
    assert prompt[0] == {"role": "user", "content": "[redacted]zz", "truncated": True,
                         "chars": len("[redacted]") + 100}
    assert out.data["truncation"] == {"messages_dropped": 0, "texts_cut": 1,
                                      "chars_dropped": 98}


def test_a_record_within_the_bounds_keeps_the_shape_other_tools_read() -> None:
    trace = Trace(prompt=[{"role": "user", "content": "hi " + SECRET}], replies=["hello"])
    out = audit_record(make_record(), trace, Redactor([SECRET]))
    assert out.data["prompt"] == [{"role": "user", "content": "hi [redacted]"}]
    assert out.data["reply"] == {"text": "hello", "values": []}
    assert out.data["rejected"] == [] and out.data["truncated"] is False
    assert "truncation" not in out.data


def test_dropped_turns_are_counted_even_when_no_text_is_cut() -> None:
    trace = Trace(prompt=[{"role": "user", "content": str(i)} for i in range(MAX_MESSAGES + 5)])
    out = audit_record(make_record(verdict=None, guard="off"), trace, Redactor())
    assert out.data["truncated"] is True
    assert out.data["truncation"] == {"messages_dropped": 5, "texts_cut": 0, "chars_dropped": 0}


def test_both_stores_keep_a_huge_request_bounded_and_exportable(make_store: MakeStore,
                                                                backend: str) -> None:
    store = make_store()
    record = make_record(request_id="req-huge", started_at=time.time(),
                         attempts=regenerated(5))
    store.audit.write(audit_record(record, huge_trace("\x01" * 10_000), Redactor()))
    assert store.audit.flush()
    if backend == "sqlite":
        with sqlite3.connect(store.settings.state_path()) as db:
            (size,) = db.execute("SELECT length(CAST(record AS BLOB)) FROM audit").fetchone()
    else:
        client = redis.Redis.from_url(SHARED_REDIS)
        try:
            entries = client.xrange(f"{store.settings.prefix}:audit")
            assert isinstance(entries, list) and len(entries) == 1
            fields = entries[0][1]
            assert fields is not None
            size = len(fields[b"record"])
        finally:
            client.close()
    assert size <= RECORD_BYTES
    (stored,) = store.query_audit(AuditQuery()).data
    assert stored.data["truncated"] is True and stored.values == ("mft.care",)
    assert list(negative_samples(store.export_audit(AuditQuery()), "d2o")) == []  # cut texts
    samples = list(negative_samples(store.export_audit(AuditQuery()), "d2o",
                                    include_truncated=True))
    assert len(samples) == 5 and all(s["violated_values"] == ["mft.care"] for s in samples)
    assert all(s["truncated"] is True for s in samples)


def test_the_trail_keeps_a_bounded_number_of_records_by_default() -> None:
    settings = StoreSettings()
    assert settings.audit_max_records == 100_000 and settings.retention_s == 30 * 86400


def test_a_redis_filled_by_the_trail_keeps_limits_and_prune_trims_it(
        own_redis: RedisProcess, tmp_path: Path) -> None:
    """At ``maxmemory`` (``noeviction``) Redis refused the limit scripts' writes: under the
    default ``fail_open`` every virtual key's limits stopped applying. They now run there
    (``proxy.store.redis_lua.ALLOW_OOM``). The trail was trimmed only by appends, which Redis
    refuses, so it stayed full for good; the periodic prune now trims it (``XTRIM`` frees
    memory where a write may not)."""
    fields = {"url": own_redis.url, "prefix": "full", "retry_s": 0.001,
              "audit_max_records": None, "spool_dir": str(tmp_path / "spool")}
    filler = open_store(StoreSettings.model_validate(fields))
    client = redis.Redis(port=own_redis.port)
    try:
        now = time.time()
        trace = huge_trace("x" * 10_000, messages=4, replies=1)
        filler.backend.append_audit([audit_record(make_record(request_id=f"req-{i}",
                                                              started_at=now), trace, Redactor())
                                     for i in range(200)])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]))
        store = open_store(StoreSettings.model_validate(fields | {"audit_max_records": 10}))
        with pytest.raises(StoreUnavailable, match="OOM"):
            store.create_key("refused")  # the trail has filled Redis
        time.sleep(0.01)  # past retry_s
        assert store.admit("vk-1", 5, None) == LimitDecision(True)  # counted all the same
        assert store.health().degraded_limits == 0
        assert store.backend.prune() >= 190
        assert client.xlen("full:audit") <= 10
        limit, deadline = int(str(client.config_get("maxmemory")["maxmemory"])), time.time() + 10
        while client.info("memory")["used_memory"] >= limit and time.time() < deadline:
            time.sleep(0.01)  # a trimmed stream may be freed by Redis's lazy-free thread
        decisions = [store.admit("vk-1", 5, None) for _ in range(5)]
        assert [d.allowed for d in decisions] == [True] * 4 + [False], decisions
        assert not any(d.degraded for d in decisions) and decisions[-1].reason == "rpm"
        store.close()
    finally:
        client.config_set("maxmemory", 0)
        client.close()
        filler.close()
