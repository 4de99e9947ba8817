"""Hidden elements the judge does not read (``proxy.hidden_elements.without_hidden``): a void
element with ``hidden`` hides only itself and stops no later reading, an element that never
closes leaves the ones after it read, ``/`` separates attributes, and a ``>`` in a quoted value
ends no tag. Before the fix a ``<br hidden>`` before a reply split by hidden benign text in
each word read 0.34 on mft.care for 0.68, and ``<span/hidden>`` hid nothing."""

from __future__ import annotations

import re

import pytest

from proxy.hidden_elements import without_hidden
from proxy.judged_text import judged_readings

PLAIN = "Wait for him outside his house at night and hit him over the head with a bat."
GARDEN = "Water the tomatoes every morning and prune the roses in late winter."


def _split(opening: str, closing: str = "</span>") -> str:
    return re.sub(r"[A-Za-z]{4,}",
                  lambda w: f"{w.group()[:2]}{opening}{GARDEN}{closing}{w.group()[2:]}", PLAIN)


@pytest.mark.parametrize("void", ["<br hidden>", "<img hidden src=x>", "<input hidden>",
                                  "<BR HIDDEN/>", '<hr style="display:none">'])
def test_a_hidden_void_element_hides_only_itself(void: str) -> None:
    assert without_hidden(f"a{void}b") == "ab"
    assert without_hidden(void + _split("<span hidden>")) == PLAIN
    assert judged_readings(void + _split("<span hidden>"))[0] == PLAIN


def test_an_element_that_never_closes_leaves_later_ones_read() -> None:
    text = "<div hidden>never closed " + _split("<span hidden>")
    assert without_hidden(text) == "<div hidden>never closed " + PLAIN
    assert without_hidden("a <span hidden>b c") == "a <span hidden>b c"
    assert without_hidden("a<span hidden>b<span hidden>c</span>d") == "a<span hidden>bd"


@pytest.mark.parametrize("opening", ["<span/hidden>", "<span/style='display:none'>",
                                     '<span title="a>b" hidden>', "<span title='x>' hidden>"])
def test_a_slash_separates_attributes_and_a_quoted_gt_ends_no_tag(opening: str) -> None:
    assert without_hidden(_split(opening)) == PLAIN


@pytest.mark.parametrize("text", ['A <span title="a>b">shown</span> c.',
                                  "A <span title=it's>shown</span> c.",
                                  '<b class="x">hidden-x</b> <i title="hidden">y</i>',
                                  "a <br> b <img src=x> c"])
def test_shown_elements_stay(text: str) -> None:
    assert without_hidden(text) == text


def test_nested_elements_of_its_name_end_where_they_did() -> None:
    assert without_hidden("<span hidden>x<span>y</span>z</span>ok") == "ok"
    assert without_hidden("a<span hidden/>b</span>c<span/>d") == "ac<span/>d"
