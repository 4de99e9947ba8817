"""When in doubt, text is shown (review mr2): the judge's main reading
(``proxy.hidden_elements.without_hidden``) drops only what a browser certainly hides. Before the
fix each case below dropped text a browser shows, so a visible threat wrapped in it and padded
with truly hidden text was read as the padding and passed (``test_hidden_doubt_real``)."""

from __future__ import annotations

import pytest

from proxy.hidden_elements import hides, without_hidden
from proxy.inline_styles import declarations

THREAT = "THREAT"


@pytest.mark.parametrize("style", [
    "font-size:0zz", "font-size:0.9vw", "font-size:1cqw", "font-size:1px", "font-size:0.05em",
    "opacity:0.01", "opacity:calc(0)", "opacity:0px", "font: foo 0 a",
    "font:0 a b,", "font:0 a,,b", "font:0/x a", "font:0 'a' b",
    'font-family:"x;opacity:0;"', "font-family:'x;display:none'",
    'opacity:0;font-family:"/*";opacity:1;font-family:"*/"',
    "background:url(a;opacity:0;)", "background:image(a;opacity:0)",
    "font-family:x\\;opacity:0", "opa/**/city:0", "opacity:0 0", "font:0 inherit",
    "font:0 a default", "font-size:0;font: oblique 10deg 16px serif",
])
def test_a_value_a_browser_rejects_or_shows_hides_nothing(style: str) -> None:
    """An unknown unit, a viewport unit, a size or opacity above 0, a ``font`` shorthand
    that does not parse whole, a ``;`` in a string, ``url()``, brackets or an escape."""
    attribute = f"style='{style}'" if '"' in style else f'style="{style}"'
    assert not hides(attribute)
    text = f"<span {attribute}>{THREAT}</span>"
    assert without_hidden(text) == text


@pytest.mark.parametrize("style", [
    "font-size:0;font-size:0zz", "opacity:0;opacity:0.5px", 'font-family:"a;b";opacity:0',
    "background:url(a;b);display:none", "font:0/0 a", "font: italic 700 0px/1 'A B', serif",
    "opacity:-2", "display:none;font-family:x\\;y",
])
def test_a_value_a_browser_takes_still_hides(style: str) -> None:
    assert hides(f"style='{style}'" if '"' in style else f'style="{style}"')


def test_declarations_are_split_as_css_splits_them() -> None:
    assert declarations('a:"x;y";b:url(c;d);e:f(g;h);i:j/*;*/k') == [
        'a:"x;y"', "b:url(c;d)", "e:f(g;h)", "i:j k"]


@pytest.mark.parametrize("inner", [
    '<span style="zoom:20">', '<span style="transform:none">',
    '<span style="font-size:calc(16px)">', '<span style="font-size:max(1em,16px)">',
    '<span style="font-size:var(--x)">', '<span style="font:20px/1 serif">', "<font size=5>",
    "<big>", "<button>", "<select>", "<textarea>", "<h2>", '<span style="font-size:1lh">',
    '<span style="font-size:revert">',
])
def test_what_may_set_a_size_shows_inside_a_parent_of_size_0(inner: str) -> None:
    """``0.05em`` of a ``font-size:400px`` element is 20px; ``zoom``, functions, form controls,
    headings, ``<big>`` and ``<font size>`` may set a size of their own: in doubt, shown."""
    name = inner[1:].split(" ", 1)[0].rstrip(">")
    text = (f'<div style="font-size:400px"><div style="font-size:0">pad{inner}{THREAT}</{name}>'
            "pad</div></div>")
    assert THREAT in without_hidden(text)
    assert "pad" not in without_hidden(text).replace(THREAT, "")


def test_a_relative_size_is_of_its_parent() -> None:
    """``0.05em`` of a ``font-size:400px`` parent is 20px: no size above 0 hides."""
    text = f'<div style="font-size:400px"><span style="font-size:0.05em">{THREAT}</span></div>'
    assert without_hidden(text) == text


@pytest.mark.parametrize(("text", "read"), [
    (f'<div hidden="until-found" style="display:block">pad</div>{THREAT}', THREAT),
    (f"<p hidden=UNTIL-FOUND>pad</p>{THREAT}", THREAT),
    (f'<span hidden style="display:revert">pad</span>{THREAT}', THREAT),
    (f'<span hidden style="display:revert-layer">pad</span>{THREAT}', THREAT),
    (f'<span hidden style="display&colon;none">pad</span>{THREAT}', THREAT),
    (f'<span style="opacity&#58;0">pad</span>{THREAT}', THREAT),
])
def test_hidden_until_found_and_revert_hide(text: str, read: str) -> None:
    """``hidden="until-found"`` hides whatever the display; ``display: revert`` falls back to
    the UA's ``[hidden]{display:none}``; character references in a style are read."""
    assert without_hidden(text) == read


@pytest.mark.parametrize("text", [
    f'<span hidden="until-found">{THREAT}</span>',  # an inline box: content-visibility no-op
    f'<div hidden="until-found" style="content-visibility:visible">{THREAT}</div>',
    f'<div hidden="until-found" style="display:inline">{THREAT}</div>',
])
def test_hidden_until_found_where_it_may_show(text: str) -> None:
    assert without_hidden(text) == text


@pytest.mark.parametrize(("text", "read"), [
    (f'<div><span style="display:none">pad</div>{THREAT}</span>', f"<div></div>{THREAT}</span>"),
    (f'<h1 style="display:none">pad<h2>{THREAT}</h2></h1>', f"<h2>{THREAT}</h2></h1>"),
    (f'<h1 style="display:none">pad</h2>{THREAT}</h1>', f"{THREAT}</h1>"),
    (f'<span style="display:none">pad<!--<span>--></span>{THREAT}</span>', f"{THREAT}</span>"),
    (f'<span style="display:none">pad<i title="<span>"></i></span>{THREAT}</span>',
     f"{THREAT}</span>"),
    (f'<span style="display:none">pad<textarea><span></textarea></span>{THREAT}</span>',
     f"{THREAT}</span>"),
    (f'<span title=x"style=display:none">{THREAT}</span>',
     f'<span title=x"style=display:none">{THREAT}</span>'),
    (f"<span title='a'style=display:none>pad</span>{THREAT}", THREAT),
    (f'<span style="display:none">pad</span title="<">{THREAT}</span>', f"{THREAT}</span>"),
    (f'<ul><li style="display:none">pad<ul><li>sub</ul><li>{THREAT}</ul>',
     f"<ul><li>{THREAT}</ul>"),
    (f'<span style="visibility:hidden">pad<b style="visibility:visible">{THREAT}</span>x',
     f'<b style="visibility:visible">{THREAT}</span>x'),
    (f"<table><tr><td style=display:none>pad<td>{THREAT}</table>",
     f"<table><tr><td>{THREAT}</table>"),
    (f"<table style=display:none><tr><td>{THREAT}</table>",
     f"<table style=display:none><tr><td>{THREAT}</table>"),
])
def test_an_element_ends_no_later_than_html_ends_it(text: str, read: str) -> None:
    """An unstyled parent's end tag closes the styled child; a heading closes a heading;
    comments and raw text hold no tags; a quoted value holds ``<``; an unquoted value holds
    quotes (``title=x"style=...`` is one attribute); a child that shows again inside hidden
    text ends no sooner than its end tag or its parent's."""
    assert without_hidden(text) == read


@pytest.mark.parametrize("text", [
    "<!-- <span hidden> -->" + THREAT, '<span title="x' + THREAT, "<span hidden" + THREAT,
    f"<!--{THREAT}", f"<textarea><span hidden>{THREAT}",
])
def test_what_never_ends_is_read_as_written(text: str) -> None:
    assert without_hidden(text) == text


@pytest.mark.parametrize(("text", "read"), [
    (f'```html\n<span style="display:none">{THREAT}</span>\n```', None),
    (f'`<span hidden>{THREAT}</span>`', None),
    (f'``<b hidden>` {THREAT} `</b>``', None),
    (f"<span hidden>pad `</span>` {THREAT}", f"` {THREAT}"),
    (f"<span hidden>pad</span> `x` {THREAT}", f" `x` {THREAT}"),
    (f"`<!--` {THREAT} `-->`", None),
])
def test_tags_in_markdown_code_hide_nothing(text: str, read: str | None) -> None:
    """Markdown shows a tag in a code span or fenced block as written (with what it holds):
    in doubt, it hides nothing; an end tag there still ends what it may end."""
    assert without_hidden(text) == (text if read is None else read)


@pytest.mark.parametrize(("text", "read"), [
    ((f'<span style="visibility:hidden">pad<x-a style="visibility:visible"><div></x-a>{THREAT}'
      "</div></x-a></span>"), f'<x-a style="visibility:visible"><div></x-a>{THREAT}</div></x-a>'),
    (f'<div style="font-size:0">pad<input value="{THREAT}">pad</div>',
     f'<input value="{THREAT}">'),
])
def test_what_shows_again_ends_at_the_latest(text: str, read: str) -> None:
    """An end tag HTML ignores (a special element above its element's) ends nothing; a form
    control inside a parent of size 0 shows, its value with it."""
    assert without_hidden(text) == read


@pytest.mark.parametrize(("text", "read"), [
    (f"<div><span style=display:none>pad<td></span>{THREAT}</div>", f"<div>{THREAT}</div>"),
    (f"<div><span style=display:none>pad<body></span>{THREAT}</div>", f"<div>{THREAT}</div>"),
    (f"<form><span style=display:none>pad<form></span>{THREAT}</form>", f"<form>{THREAT}</form>"),
    (f"<td style=display:none>{THREAT}</td>", f"<td style=display:none>{THREAT}</td>"),
    (f"<ruby>a<rp style=display:none>pad<rt>{THREAT}</ruby>", f"<ruby>a<rt>{THREAT}</ruby>"),
    (f"<svg><g style=display:none>pad<p>{THREAT}</p>", f"<svg><p>{THREAT}</p>"),
])
def test_a_start_tag_html_drops_or_that_closes_ends_what_it_may(text: str, read: str) -> None:
    """A ``<td>`` outside a table, a ``<body>`` or a nested ``<form>`` is dropped (it blocks
    no end tag and hides nothing); ``<rt>`` ends ``<rp>``; ``<p>`` ends ``svg`` content."""
    assert without_hidden(text) == read


@pytest.mark.parametrize(("text", "shown"), [
    # the adoption agency moves what a block holds out of the elements it was in
    (f'<i> w0 <section> w3 <g style="font-size:0"></i> {THREAT} </section>', THREAT),
    (f'<a><section><ruby hidden><h1 hidden style="display:block"> {THREAT} </a>', THREAT),
    ((f'<nobr style="font-size:16px"><form><dl><label style="visibility:hidden"> x <li> {THREAT}'
      "</nobr>"), THREAT),
    # a <form> in a table holds nothing; <rt> ends a <p>; <table> in a table ends it
    (f'<table><b><li><form style="visibility:hidden"><nobr> {THREAT} </table>', THREAT),
    (f'<ruby><p style="font-size:0">pad<rt> {THREAT}</ruby>', THREAT),
])
def test_what_html_moves_or_ends_is_read_where_it_shows(text: str, shown: str) -> None:
    """Cases a spec parser (html5lib) shows and the reading dropped (random structures)."""
    assert shown in without_hidden(text)
