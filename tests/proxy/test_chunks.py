"""Stream chunk helpers: what the chunked mode keeps of a chunk besides its text."""

from __future__ import annotations

from proxy.chunks import ReplyText, refusal_chunks, tokens, without_text


def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_without_text_keeps_role_finish_and_usage_only() -> None:
    assert without_text(chunk({"content": "hi"})) is None
    assert without_text(chunk({"tool_calls": [{"index": 0}]})) is None
    kept = without_text(chunk({"content": "last words"}, "stop"))
    assert kept is not None and kept["choices"] == [
        {"index": 0, "delta": {}, "finish_reason": "stop"}]
    role = without_text(chunk({"role": "assistant", "content": ""}))
    assert role is not None and role["choices"][0]["delta"] == {"role": "assistant"}
    usage = {"id": "c", "choices": [], "usage": {"total_tokens": 3}}
    assert without_text(usage) == usage


def test_reply_text_and_refusal_stream() -> None:
    reply = ReplyText.of([chunk({"content": "Hello "}), chunk({"content": "you"}),
                          chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}),
                          chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]})])
    assert reply.text == "Hello you\n{\"a\": 1}"
    assert tokens("Hello, you!") == 4
    usage = {"id": "c", "choices": [], "usage": {"total_tokens": 3}}
    out = refusal_chunks([chunk({"content": "bad"}), usage], "No.")
    assert [c["choices"][0]["delta"] for c in out[:3]] == [
        {"role": "assistant", "content": ""}, {"content": "No."}, {}]
    assert out[2]["choices"][0]["finish_reason"] == "content_filter" and out[3] == usage
