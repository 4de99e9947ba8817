"""``8`` read as ``b`` in a word of letters and digits (``proxy.letter_forms.digits_read``):
"8reak every 8one" shows "break every bone" to a reader. Before the fix ``8`` stood for no
letter and the threat so written read mft.care 0.27 for 0.54 plain
(``test_hidden_styles_real``); words where ``8`` is a number or a sound ("gr8", "k8s", "8am",
"1080p", "UTF8") read as written, as a word of three that starts with a digit does ("8at", as
"4ft")."""

from __future__ import annotations

import pytest

from proxy.letter_forms import digits_read
from proxy.shown_text import shown


@pytest.mark.parametrize(("written", "read"), [
    ("I will find you and 8reak every 8one.", "I will find you and break every bone."),
    ("8eat him 8adly with a 8ase8all 8at", "beat him badly with a baseball 8at"),
    ("8l00d and 8r0ken 80nes", "blood and broken bones"),
])
def test_an_eight_reads_as_b(written: str, read: str) -> None:
    assert digits_read(written) == read
    assert shown(written)[0] == read


@pytest.mark.parametrize("text", [
    "gr8 m8, see you l8r at 8am or 8pm on the 8th; k8s, x86, i18n, UTF8, 1080p, 128GB, 8GB.",
    "A 4x8 sheet, 18mm ply, 28mm lens, 8oz cup, 80s music, the 1800s, B8 and V8 engines.",
    "Use `sk8 8reak` in code, see https://x.io/8one, hash 8bad8eef and 0x8bad.",
])
def test_an_eight_that_spells_no_word_reads_as_written(text: str) -> None:
    assert digits_read(text) == text
