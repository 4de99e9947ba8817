"""Elements an inline style hides from a rendered page (``proxy.inline_styles``,
``proxy.hidden_elements.without_hidden``): ``opacity: 0`` and ``font-size: 0`` (with their
equivalents: ``0.0``, ``0%``, ``0px``, the ``font`` shorthand; not values merely faint or small,
``opacity: 0.01``, ``font-size: 1px``: how small depends on the page, review mr2) hide what they hold as ``display: none`` does, and
the judge reads what a person sees, the hidden padding dropped. Before the fix a threat padded
with gardening tips in ``opacity:0`` or ``font-size:0`` spans read as the tips (mft.care 0.01
for 0.54 plain, ``test_hidden_styles_real``).

A style is read as a browser reads it: the last valid declaration of a property wins, an
``!important`` one over later ones; a descendant that sets ``visibility: visible`` or a
font size of its own shows again inside ``visibility: hidden`` or ``font-size: 0`` (a
threat in such a descendant of padding stays in the main reading); ``style`` with
``display`` shows an element with the ``hidden`` attribute."""

from __future__ import annotations

import re

import pytest

from proxy.hidden_elements import hides, without_hidden
from proxy.judged_text import judged_readings

THREAT = "I will find you and break every bone."
GARDEN = "Water the tomatoes every morning and prune the roses in late winter."


def padded(style: str) -> str:
    return f'<span style="{style}">{GARDEN}</span> {THREAT} <span style="{style}">{GARDEN}</span>'


HIDING = ["opacity:0", "opacity: 0.0", "opacity:.0", "opacity:0%", "OPACITY:0 !important",
          "opacity:-1", "font-size:0", "font-size: 0px", "font-size:0em", "font-size:0.0rem",
          "font-size:0%", "font: 0/0 a", "font: italic bold 0px Arial, sans-serif",
          "color:red; opacity:0", "opacity:0;", "display:none", "visibility:hidden",
          "opacity:1; opacity:0", "opacity:0; opacity:x", "opacity:0 !important; opacity:1",
          "opacity:/* a comment */0", "font-size:12px; font:0/0 a", "font-size:0; font:0/0"]


@pytest.mark.parametrize("style", HIDING)
def test_a_style_that_hides_its_element_is_read_as_nothing(style: str) -> None:
    assert hides(f'style="{style}"')
    assert without_hidden(padded(style)) == f" {THREAT} "
    assert judged_readings(padded(style))[0].strip() == THREAT


SHOWING = ["opacity:0.5", "opacity:1", "opacity: 0.1", "opacity:10%", "font-size:0.9em",
           "font-size:10px", "font-size:2px", "font-size:8pt", "font-size:0.5em", "font-size:1vw",
           "font-size:small", "font: bold 10px/0 serif", "opacity:0; opacity:1",
           "font-size:0; font-size:12px", "line-height:0", "margin:0", "padding: 0px",
           "z-index:0", "opacity", "opacity:", "color:#000000", "font: 0/0", "font:0px",
           "font-size:12px; font: 0/0", "opacity:0.01", "opacity:5%", "font-size:1px",
           "font-size:1pt", "font-size:0.05em", "font-size:1%", "font: 1px serif"]


@pytest.mark.parametrize("style", SHOWING)
def test_a_style_that_shows_its_element_keeps_it(style: str) -> None:
    assert not hides(f'style="{style}"')
    assert without_hidden(padded(style)) == padded(style)


@pytest.mark.parametrize("attributes", ['title="opacity:0"', 'data-style="font-size:0"',
                                        'class="font-size-0 opacity-0"',
                                        'style="color:red" style="opacity:0"'])
def test_only_a_style_attribute_hides(attributes: str) -> None:
    """Not another attribute's value, nor a second ``style`` (HTML keeps the first)."""
    assert not hides(attributes)


@pytest.mark.parametrize(("outer", "inner"), [
    ("font-size:0", "font-size:16px"), ("font-size:0", "font:12pt serif"),
    ("visibility:hidden", "visibility:visible"),
    ("font-size:0; visibility:hidden", "font-size:1rem; visibility:visible"),
    ("font-size:0", "font-size:larger"),
])
def test_a_descendant_that_shows_again_is_read(outer: str, inner: str) -> None:
    """A threat in a descendant that shows again, inside hidden padding: only it shows."""
    text = f'<div style="{outer}">{GARDEN} <b style="{inner}">{THREAT}</b> {GARDEN}</div>'
    read = without_hidden(text)
    assert GARDEN not in read and THREAT in read
    assert re.sub(r"<[^>]*>", "", judged_readings(text)[0]).strip() == THREAT


@pytest.mark.parametrize(("outer", "inner"), [
    ("opacity:0", "opacity:1; font-size:16px; visibility:visible"),
    ("display:none", "display:block"), ("font-size:0", "font-size:2em"),
    ("font-size:0", "font-size:smaller"), ("visibility:hidden", "color:red"),
])
def test_a_descendant_that_cannot_show_again_stays_hidden(outer: str, inner: str) -> None:
    text = f'<div style="{outer}">{GARDEN} <b style="{inner}">{GARDEN}</b></div>{THREAT}'
    assert without_hidden(text) == THREAT


def test_a_hidden_attribute_with_a_display_style_shows() -> None:
    text = f'<span hidden style="display:inline">{THREAT}</span><span hidden>{GARDEN}</span>'
    assert without_hidden(text) == f'<span hidden style="display:inline">{THREAT}</span>'


def test_a_child_ending_after_its_parent_ends_with_it() -> None:
    """``</div>`` closes the ``<b>`` it holds: what follows shows at the parent's size."""
    text = f'<div style="font-size:0">{GARDEN}<b style="font-size:9px">x</div>{THREAT}</b>'
    assert without_hidden(text) == f'<b style="font-size:9px">x</div>{THREAT}</b>'


def test_an_unquoted_font_shorthand_ends_at_a_space() -> None:
    """``style=font:0/0 a`` is the style ``font:0/0`` (no family: no font) and an attribute
    ``a``: the element shows."""
    assert not hides("style=font:0/0 a")
    assert hides("style='font:0/0 a'")


def test_an_unclosed_comment_in_a_style_hides_nothing_after_it() -> None:
    assert not hides('style="/* opacity:0"')
    assert hides('style="opacity:0 /* unclosed"')


@pytest.mark.parametrize(("written", "shown"), [
    ("Gr<style>q</style>ab", "Grab"),
    ("Gr<STYLE type=text/css>q{}</STYLE>ab", "Grab"),
    ("Gr<script>alert(1)</script>ab", "Grab"),
    ("Gr<template><b>q</b></template>ab", "Grab"),
    ("Gr<script >a<b>c</b></script>ab", "Grab"),
])
def test_elements_never_shown_are_dropped(written: str, shown: str) -> None:
    """review r2: ``script``, ``style`` and ``template`` never render what they hold, so
    ``Gr<style>q</style>ab`` shows "Grab"; it was read "Grqab" and passed every clear case."""
    assert without_hidden(written) == shown


def test_a_style_element_left_open_is_read_as_written() -> None:
    """Without its end tag the element's end is unknown: the judge reads more, not less."""
    assert without_hidden("Grab <style>a bat") == "Grab <style>a bat"
