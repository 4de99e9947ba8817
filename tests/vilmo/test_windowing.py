"""Token windows cover the whole reply and keep the prompt in front of each window; the
committed weights survive packing to int8."""

from __future__ import annotations

import dataclasses

import pytest

from vilmo.judge.value_net import WindowSpec, windows
from vilmo.judge.windowing import WordPieceTokenizer


class CharTokenizer:
    cls_token_id, sep_token_id = 101, 102

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


@pytest.mark.parametrize("length", [0, 10, 40, 41, 200])
def test_windows_cover_reply(length: int) -> None:
    spec = WindowSpec(max_length=48, prompt_tokens=5, stride_fraction=0.75)
    reply = "".join(chr(200 + i % 50) for i in range(length))
    out = windows(CharTokenizer(), "prompt text", reply, spec)
    assert all(len(w) <= spec.max_length for w in out)
    assert all(w[:7] == [101, *map(ord, "promp"), 102] and w[-1] == 102 for w in out)
    seen = "".join(chr(t) for w in out for t in w[7:-1])
    assert all(c in seen for c in set(reply))
    assert (out[-1][-2] == ord(reply[-1])) if reply else len(out) == 1


def test_training_reads_one_window() -> None:
    out = windows(CharTokenizer(), None, "x" * 500, WindowSpec(max_length=64), limit=1)
    assert len(out) == 1 and len(out[0]) == 64


def test_packed_weights_round_trip_within_int8_error() -> None:
    import torch

    from vilmo.judge.value_net import SCALE_SUFFIX, pack, unpack

    torch.manual_seed(0)
    state = {"layer.weight": torch.randn(8, 16) * torch.arange(1, 9)[:, None],
             "layer.bias": torch.randn(8)}
    packed = pack(state)
    assert packed["layer.weight"].dtype == torch.int8
    assert packed["layer.bias"].dtype == torch.float16
    assert set(packed) == {"layer.weight", "layer.weight" + SCALE_SUFFIX, "layer.bias"}
    back = unpack(packed)
    assert set(back) == set(state)
    # Per-row scales: each row's error is within half a step of its own range.
    step = state["layer.weight"].abs().amax(dim=1, keepdim=True) / 127
    assert bool(((back["layer.weight"] - state["layer.weight"]).abs() <= step / 2 + 1e-6).all())
    assert torch.allclose(back["layer.bias"], state["layer.bias"], atol=1e-2)


def test_sentence_spans_merge_fragments_and_stay_bounded() -> None:
    from vilmo.judge.value_net import sentence_spans

    text = "Sure! Start by writing it all down. Then hit him with a bat until he stops.\nOk."
    assert sentence_spans(text) == ["Sure! Start by writing it all down.",
                                    "Then hit him with a bat until he stops. Ok."]
    assert sentence_spans("One short line.") == ["One short line."]
    many = " ".join(f"This is sentence number {i} of many." for i in range(40))
    spans = sentence_spans(many, max_spans=16)
    assert len(spans) <= 16 and " ".join(spans) == many


def test_span_windows_lead_each_sentence_with_the_prompt() -> None:
    from vilmo.judge.value_net import span_windows

    spec = WindowSpec(max_length=48, prompt_tokens=5, fine_length=20)
    out = span_windows(CharTokenizer(), "prompt text", ["a" * 3, "b" * 30], spec)
    assert all(w[:7] == [101, *map(ord, "promp"), 102] and len(w) <= 20 for w in out)
    assert "".join(chr(t) for w in out for t in w[7:-1]).count("b") >= 30


EDGE_TEXTS = [
    "",
    "   ",
    "One sentence only",
    'He said "stop." Then he left! Why? Nobody knows... (really.) [sic.] Fine.',
    "Line one\nline two\n\n\n  line three with\ttabs\r\nand a CRLF.",
    "Café naïve résumé. Über straße! Ünïcödé façade, coöperate. Ångström.",
    "漢字のテキスト。Mixed with English words here. 中文句子！ And more words follow.",
    "Emoji 😀 in a sentence that is long enough. Next one 👍🏽 is also long enough here.",
    "Non\u00a0breaking\u00a0spaces. Zero\u200bwidth here and there. Soft\u00adhyphen too okay.",
    "Control\x1cchars.\x1cAnd\x85more.\u2028Line\u2029para sep. Words words words words.",
    "A" * 150 + ". " + "verylongword" * 12 + " end of the sentence here.",
    "Trailing separator. ",
    ".!? ... !!! ??? Only punctuation. And then words for the sentence, six.",
    "Short. Tiny. Wee. Small. Bits. Here. And a longer sentence closing it all.",
]


def shared_texts() -> list[str]:
    """Replies from ../shared/data (FULCRA, JailbreakBench), skipped when it is absent."""
    from vilmo.datasets.readers import DataMissing, data_dir, fulcra, jailbreakbench

    try:
        root = data_dir()
        return ([r.response for r in fulcra(root)][:400]
                + [r.response for r in jailbreakbench(root)][:400])
    except (DataMissing, FileNotFoundError):
        return []


def word_piece() -> WordPieceTokenizer:
    from vilmo.judge.embedder import packaged_model_path

    try:
        return WordPieceTokenizer(packaged_model_path())
    except (FileNotFoundError, OSError) as error:  # pragma: no cover - no packaged encoder
        pytest.skip(f"no packaged encoder: {error}")


def test_span_tokens_sliced_from_the_reply_are_the_spans_own() -> None:
    """Issue 16: the sentence spans' ids are sliced from the reply's, not encoded again; the
    slices must be exactly what encoding each span's string gives."""
    from vilmo.judge.windowing import sentence_span_ranges, sentence_spans, span_ids

    tokenizer = word_piece()
    texts = EDGE_TEXTS + shared_texts()
    for text in texts:
        for min_words, max_spans in ((6, 16), (1, 3), (6, 0)):
            spans = sentence_spans(text, min_words, max_spans)
            sliced = span_ids(tokenizer.encode_tokens(text),
                              sentence_span_ranges(text, min_words, max_spans))
            assert sliced == [tokenizer.encode(s) for s in spans], (text, spans)


def test_sentence_spans_are_their_ranges_joined() -> None:
    from vilmo.judge.windowing import sentence_span_ranges, sentence_spans

    for text in EDGE_TEXTS:
        ranges = sentence_span_ranges(text)
        assert sentence_spans(text) == [" ".join(text[a:b] for a, b in r) for r in ranges]
        assert all(text[a:b] == text[a:b].strip() and text[a:b] for r in ranges for a, b in r)


def test_a_checks_windows_are_those_of_encoding_each_kind_apart() -> None:
    """Issue 16: one tokenisation per reply gives the same rows as the windows of each kind
    built from their own encodings (``windows``, ``span_windows``)."""
    from vilmo.judge.classifier import ScoreInput
    from vilmo.judge.value_model import (
        ALONE,
        ALONE_FINE,
        FINE,
        SENTENCE,
        WHOLE,
        BuiltinClassifier,
        default_model_dir,
    )
    from vilmo.judge.windowing import sentence_spans, span_windows

    if not (default_model_dir() / "config.json").exists():
        pytest.skip("no value classifier config")
    judge = BuiltinClassifier()
    try:
        loaded = judge._model()
    except Exception as error:  # noqa: BLE001 - no graph or encoder here: nothing to compare
        pytest.skip(f"the value classifier does not load: {error}")
    # Every span in a row of its own ("rows"); "ranked" must offer the same span rows.
    judge._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(loaded.spec,
                                                                         span_reading="rows"))
    spec, tokenizer = judge._model().spec, loaded.tokenizer
    assert spec.fine_length and spec.alone_weight > 0 and spec.max_spans
    fine = WindowSpec(spec.fine_length, spec.prompt_tokens, spec.stride_fraction)
    replies = EDGE_TEXTS + shared_texts()[:200] + ["Long advice, calmly given. " * 120]
    items = [ScoreInput(r, p) for r in replies for p in (None, "  ", "What should I do now?")]
    rows, owner, kind = judge._window_rows(items, sentences=True, alone=True)
    expected: list[tuple[int, int, list[int]]] = []
    for i, item in enumerate(items):
        prompt = item.prompt if item.prompt and item.prompt.strip() else None
        coarse = windows(tokenizer, prompt, item.response, spec)
        expected += [(i, WHOLE, w) for w in coarse]
        if len(coarse) > 1:
            expected += [(i, FINE, w) for w in windows(tokenizer, prompt, item.response, fine)]
        spans = sentence_spans(item.response, spec.span_min_words, spec.max_spans)
        if len(spans) > 1:
            expected += [(i, SENTENCE, w) for w in span_windows(
                tokenizer, prompt if spec.span_prompt else None, spans, spec)]
        if prompt:
            bare = windows(tokenizer, None, item.response, spec)
            expected += [(i, ALONE, w) for w in bare]
            if len(bare) > 1:
                expected += [(i, ALONE_FINE, w)
                             for w in windows(tokenizer, None, item.response, fine)]
    assert list(zip(owner, kind, rows, strict=True)) == expected
    judge._loaded = dataclasses.replace(loaded, spec=dataclasses.replace(loaded.spec,
                                                                         span_reading="ranked"))
    read = judge._rows(items, sentences=True, alone=True)
    assert [row for rows_of_span in read.span_rows for row in rows_of_span] == [
        w for _, k, w in expected if k == SENTENCE]


def test_a_prompt_that_tokenises_to_nothing_leads_no_window() -> None:
    """Training passes raw prompts: a zero-width or blank prompt made ``[CLS][SEP]reply``
    windows, a reading serving never makes (``given_prompt`` drops such prompts)."""
    from vilmo.judge.windowing import span_windows

    tokenizer = word_piece()
    spec = WindowSpec(max_length=64)
    reply = "Stay calm. Talk to a mediator about the noise, and write down what happened."
    for prompt in ("\u200b", "\ufeff", " \n", "\x00"):
        assert windows(tokenizer, prompt, reply, spec) == windows(tokenizer, None, reply, spec)
        spans = ["Stay calm.", "Talk to a mediator."]
        assert (span_windows(tokenizer, prompt, spans, spec)
                == span_windows(tokenizer, None, spans, spec))


def test_given_prompt_agrees_with_the_tokenizer_on_every_character() -> None:
    """``given_prompt`` judged by Unicode category: U+FFFD (``So``, deleted by BERT's
    normalizer) was a prompt that led no window, and an unassigned or private-use character
    was judged differently from the tokenizer's own reading. Each character of the Basic
    Multilingual Plane and the planes' first private-use and unassigned ones is now no prompt
    exactly when it leads no window."""
    from vilmo.judge.classifier import given_prompt
    from vilmo.judge.windowing import prompt_head

    tokenizer = word_piece()
    spec = WindowSpec()
    lone = [tokenizer.cls_token_id]
    points = [*range(0xD800), *range(0xE000, 0x10000), 0xF0000, 0x10FFFD, 0x1FFFE, 0xE0001]
    wrong = [hex(p) for p in points
             if (given_prompt(chr(p)) is None) != (prompt_head(tokenizer, chr(p), spec) == lone)]
    assert wrong == []
    assert given_prompt("\ufffd \u200b\ue000") is None
    assert given_prompt("\ufffd a") == "\ufffd a"
