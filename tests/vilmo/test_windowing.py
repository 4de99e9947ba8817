"""Token windows cover the whole reply and keep the prompt in front of each window; the
committed weights survive packing to int8."""

from __future__ import annotations

import pytest

from vilmo.judge.value_net import WindowSpec, windows


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
