"""Stream chunk helpers: the readable text of each choice, and refusal chunks."""

from __future__ import annotations

from proxy.chunks import ChoiceText, by_choice, readable_text, refusal_chunks, reply_of, tokens
from proxy.replies import ChatCompletionChunk, ReplyMessage


def chunk(delta: ReplyMessage, finish: str | None = None, index: int = 0,
          ) -> ChatCompletionChunk:
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def test_a_streamed_choice_reads_as_its_plain_message() -> None:
    message = {"role": "assistant", "reasoning_content": "Think first.", "content": "Hello you",
               "refusal": "No way.", "function_call": {"name": "f", "arguments": "{\"b\": 2}"},
               "tool_calls": [{"id": "1", "type": "function",
                               "function": {"name": "g", "arguments": "{\"a\": 1}"}},
                              {"id": "2", "type": "custom", "custom": {"name": "h", "input": "Hi"}}],
               "audio": {"id": "a", "data": "AAAA", "expires_at": 1, "transcript": "Said so."}}
    text = ChoiceText()
    for delta in ({"role": "assistant", "reasoning_content": "Think "},
                  {"reasoning_content": "first."}, {"content": "Hello "}, {"content": "you"},
                  {"refusal": "No way."}, {"function_call": {"name": "f", "arguments": ""}},
                  {"function_call": {"arguments": "{\"b\": 2}"}},
                  {"tool_calls": [{"index": 1, "id": "2", "type": "custom",
                                   "custom": {"name": "h", "input": "H"}}]},
                  {"audio": {"id": "a", "data": "AA", "transcript": "Said "}},
                  {"tool_calls": [{"index": 0, "id": "1", "type": "function",
                                   "function": {"name": "g", "arguments": "{\"a\""}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                  {"tool_calls": [{"index": 1, "custom": {"input": "i"}}]},
                  {"audio": {"data": "AA", "transcript": "so.", "expires_at": 1}}):
        text.add(delta)
    assert text.text == readable_text(message)
    assert text.text == ("Think first.\nHello you\nNo way.\nSaid so.\nf\n{\"b\": 2}\n"
                         "g\n{\"a\": 1}\nh\nHi")
    assert tokens("Hello, you!") == 4


def test_every_string_but_ids_labels_and_audio_data_is_read() -> None:
    """Refuse by default: a field the gateway does not know is read too."""
    message = {"role": "assistant", "id": "x", "tool_call_id": "t", "audio": {"data": "AAAA"},
               "annotations": [{"type": "url_citation", "url_citation": {"title": "Title"}}],
               "reasoning_details": [{"type": "reasoning.text", "text": "Thought."}],
               "future_field": {"nested": ["Words", 3, None, True]}}
    assert readable_text(message) == "Title\nWords\nThought."  # by name after TEXT_ORDER


def test_nesting_however_deep_is_read_without_recursion() -> None:
    deep: object = "Deep words."
    for _ in range(5000):
        deep = [deep]
    assert readable_text({"content": deep}) == "Deep words."


def test_choices_are_kept_apart() -> None:
    two: ChatCompletionChunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}},
                                  {"index": 1, "delta": {"content": "b"}}]}
    assert [(i, c["choices"][0]["delta"]) for i, c in by_choice(two)] == [
        (0, {"content": "a"}), (1, {"content": "b"})]
    reply = reply_of([two, chunk({"content": "c"}, index=1)])
    assert {i: t.text for i, t in reply.items()} == {0: "a", 1: "bc"}


def test_refusal_chunks_end_the_choice_with_content_filter() -> None:
    out = refusal_chunks(chunk({"content": "bad"}), "No.", index=2)
    assert [c["choices"][0]["delta"] for c in out] == [{"role": "assistant", "content": "No."}, {}]
    assert [c["choices"][0]["index"] for c in out] == [2, 2]
    assert out[1]["choices"][0]["finish_reason"] == "content_filter" and out[0]["id"] == "c"
