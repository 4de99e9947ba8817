"""Where an element whose end tag HTML lets a writer leave out ends, for the judge
(``proxy.hidden_elements._early_ends``): a ``<p style="opacity:0">`` of padding left open
before the next ``<p>`` (or a ``<li>``, ``<dt>``, ``<dd>`` before the next) hides only the
padding. Before the fix it never closed and the padding stayed in the reading, diluting the
visible threat; and with a stray ``</p>`` later the padding's element hid the visible
paragraph after it too. Never past where a browser ends it, and linear on any input."""

from __future__ import annotations

import pytest

from proxy.hidden_elements import without_hidden
from proxy.shown_text import shown

PAD, THREAT = "PAD", "THREAT"


@pytest.mark.parametrize(("text", "read"), [
    ('<p style="opacity:0">PAD<p>THREAT</p>', "<p>THREAT</p>"),
    ('<p style="opacity:0">PAD<p>THREAT</p>x</p>', "<p>THREAT</p>x</p>"),
    ('<p style="font-size:0">PAD<div>THREAT</div>', "<div>THREAT</div>"),
    ('<p style="opacity:0">PAD<h2>THREAT</h2>', "<h2>THREAT</h2>"),
    ('<div><p style="opacity:0">PAD</div>THREAT<p>x', "<div></div>THREAT<p>x"),
    ('<b><p style="opacity:0">PAD</b>THREAT<p>', "<b></b>THREAT<p>"),
    ('<ul><li style="opacity:0"><b>PAD<li>THREAT</ul>', "<ul><li>THREAT</ul>"),
    ('<li style="opacity:0">PAD<ul><li>sub</li></ul><li>THREAT', "<li>THREAT"),
    ("<dl><dt style=opacity:0>PAD<dd>THREAT</dl>", "<dl><dd>THREAT</dl>"),
    ('<p style="opacity:0">PAD</p>THREAT', "THREAT"),
])
def test_an_element_ends_where_html_ends_it(text: str, read: str) -> None:
    assert without_hidden(text) == read


@pytest.mark.parametrize("text", [
    '<p style="opacity:0">PAD <b>x</b> THREAT',  # no end: as written
    '<p style="opacity:0">PAD<span>THREAT',
])
def test_an_element_with_no_end_in_sight_is_read_as_written(text: str) -> None:
    assert without_hidden(text) == text


def test_an_element_ends_however_far_its_end_is() -> None:
    """review mr2: past 64 tags the ``<p>`` of padding was left as written (it diluted the
    threat); the stack of open elements ends it wherever HTML does."""
    text = '<p style="opacity:0">PAD' + "<br>" * 100 + "<p>THREAT"
    assert without_hidden(text) == "<p>THREAT"
    assert without_hidden('<p style="opacity:0">PAD' + "<br>" * 10 + "<p>THREAT") == "<p>THREAT"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", ['<li style="opacity:0"><ul>', '<p style="opacity:0"><b>',
                                  '<li style="font-size:0"><b style="font-size:9px">',
                                  '<p style="opacity:0">x<p>', '<dd style=opacity:0><dl><dt>',
                                  '<span style="opacity:0;opacity:0;font:0/0 a">'])
def test_a_megabyte_of_styled_elements_reads_in_linear_time(unit: str) -> None:
    """One pass over the tags, each element pushed and popped once
    (quadratic work would take hours)."""
    text = unit * (1_000_000 // len(unit))
    read, also = shown(text)
    assert len(read) <= len(text) and len(also) <= 1
