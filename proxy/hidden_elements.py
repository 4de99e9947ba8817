"""Elements a renderer hides, for the judge (``proxy.shown_text``): a ``script``, ``style`` or
``template`` element (``NEVER_SHOWN``), an element with the ``hidden`` attribute (unless its style sets a ``display``), or a style that hides it
(``proxy.inline_styles``: ``display: none``, ``opacity: 0``, ``visibility: hidden``,
``font-size: 0``) shows nothing of what it holds (``st<span style="display:none">qzx</span>ab``
shows "stab"), but the descendants that show again inside the last two
(``visibility: visible``, a font size of their own).

Only an attribute named ``hidden`` and a ``style`` attribute's properties hide (review rv5: a
``hidden`` anywhere in the attributes, ``<span title="not hidden">``, dropped a shown element
from the main reading). Attributes follow the name after whitespace or ``/`` (``<span/hidden>``,
as HTML parsers read it), and a ``>`` inside a quoted value does not end the tag
(``<span title="a>b" hidden>``). The element ends at its closing tag of the same name in any
case, past its child elements and nested ones of its name (``<SPAN hidden><b>x</b></span>``);
its name is any custom element's (``<my-note-element hidden>``). A void element
(``<br hidden>``, ``<img hidden src=x>``) hides only itself; a ``<p>``, ``<li>``, ``<dt>``,
``<dd>`` or ``<option>`` ends where HTML ends it when its end tag is left out
(``_implied_end``); any other element that never closes is left as written, and the elements
after it are still read (review: a ``<br hidden>`` before a reply left every later hidden
element in the reading, 0.34 for 0.68 on mft.care).
An element that ends after its parent ends with it (as an HTML parser closes it). Linear: each
tag is read once, in one pass; each element's end is found from one pass over the tags of its
name; what shows is read in one pass over the elements a style or ``hidden`` concerns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.inline_styles import NO_STYLE, Style, style_of

_HINT = re.compile(r"hidden|style\s*+=|<(?:script|style|template)(?=[\s/>])", re.IGNORECASE)
"""What a hiding tag holds (an attribute's name) or is (``NEVER_SHOWN``): a fast scan, since
most text has none."""
_TAG = re.compile(r"""<(/?)([A-Za-z][A-Za-z0-9-]{0,63}+)(?=[\s/>])"""
                  r"""((?:[^<>"']++|"[^"<]*+"|'[^'<]*+'|["'])*+)>""")
"""A start or end tag: its name, then its attributes, a quoted value read whole (a ``>`` in it
ends nothing; an unclosed quote is a character). No part crosses a ``<``: each try stops at
the next one, so a pass is linear."""
_ATTRIBUTE = re.compile(r"""([^\s"'<>/=]++)(?:\s*+=\s*+(?:"([^"]*+)"|'([^']*+)'|([^\s"'<>=`]++)))?""")
"""One attribute of a tag: its name, and its value quoted either way or not."""
VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                           "meta", "source", "track", "wbr"})
"""Elements with no content or end tag: hidden, they hide only themselves."""
NEVER_SHOWN = frozenset({"script", "style", "template"})
"""Elements whose content a renderer never shows, whatever their attributes (review r2:
``Gr<style>q</style>ab`` shows "Grab" and was read "Grqab", which passed every clear case)."""
_GONE = Style(gone=True)


def element_style(attributes: str) -> Style:
    """What a start tag's ``attributes`` do to what shows of its element: its ``style``
    (``proxy.inline_styles``), and an attribute named ``hidden`` as ``display: none`` unless
    that style sets a ``display`` (not a value that says "hidden", not ``aria-hidden``, which
    hides from a screen reader only)."""
    hidden, styled, style = False, False, NO_STYLE
    for attribute in _ATTRIBUTE.finditer(attributes):
        name = attribute.group(1).lower()
        if name == "hidden":
            hidden = True
        elif name == "style" and not styled:  # the first of a name counts, in HTML
            styled = True
            style = style_of(next((v for v in attribute.groups()[1:] if v is not None), ""))
    if hidden and not style.displayed and not style.gone:
        return Style(True, style.visible, style.sized)
    return style


def hides(attributes: str) -> bool:
    """Whether a start tag's ``attributes`` hide its element's own text (``element_style``)."""
    return element_style(attributes).hides


@dataclass(slots=True)
class _Tag:
    name: str
    at: int
    """Where it is among the text's tags."""
    start: int
    end: int
    closing: bool
    style: Style
    self_closing: bool
    ends_at: int | None = None
    """For a start tag with a style: where its element ends (past its closing tag); None:
    never."""


def _find_ends(tags: list[_Tag]) -> None:
    """Set ``ends_at`` of each start tag with a style among ``tags`` (all of one name, in
    order): its element ends at the first closing tag where closing tags after it outnumber
    the start tags after it (those not ``/>``) by one. With ``depth`` the closing tags less
    the start tags so far, that is the first tag after it whose ``depth`` exceeds its own:
    each waiting start tag is answered once (a stack of them, their depths falling to the
    top)."""
    waiting: list[tuple[int, _Tag]] = []
    depth = 0
    for tag in tags:
        if tag.closing:
            depth += 1
        elif not tag.self_closing:
            depth -= 1
        while waiting and waiting[-1][0] < depth:
            waiting.pop()[1].ends_at = tag.end
        if tag.style is not NO_STYLE:
            waiting.append((depth, tag))


@dataclass(frozen=True, slots=True)
class _Shown:
    """What shows inside an element: nothing (``gone``), or its text unless its visibility
    is hidden or its font has no size."""

    gone: bool = False
    invisible: bool = False
    unsized: bool = False

    def within(self, style: Style) -> _Shown:
        return _Shown(self.gone or style.gone,
                      self.invisible if style.visible is None else not style.visible,
                      self.unsized if style.sized is None else not style.sized)

    @property
    def hidden(self) -> bool:
        return self.gone or self.invisible or self.unsized


_PAGE = _Shown()


_P_CLOSERS = frozenset({
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div",
    "dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu",
    "nav", "ol", "p", "search", "section", "summary", "ul", "h1", "h2", "h3", "h4", "h5", "h6",
    "pre", "listing", "form", "li", "dd", "dt", "plaintext", "table", "hr", "xmp"})
_IMPLIED_ENDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "p": (_P_CLOSERS, frozenset()),
    "li": (frozenset({"li"}), frozenset({"ul", "ol", "menu", "dir"})),
    "dt": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "dd": (frozenset({"dt", "dd"}), frozenset({"dl"})),
    "option": (frozenset({"option", "optgroup"}), frozenset()),
}
"""Elements whose end tag HTML lets a writer leave out: each ends before a start tag of the
first set (a ``<p>`` before a ``<div>``, a ``<li>`` before the next), unless an element of
the second set opened after it holds that tag (a nested list's ``<li>``)."""
IMPLIED_END_TAGS = 64
"""The most tags read after an element for where HTML ends it (``_implied_end``); past them,
its end is its closing tag's, or it is left as written."""
IMPLIED_END_READS = 4
"""The most tags read for all elements of a name together (``_end_implied``), times the
text's tags: linear however the walks overlap (each ``<li>`` of a list nested 64 deep)."""


def _implied_end(tags: list[_Tag], tag: _Tag, most: int) -> tuple[int | None, int]:
    """Where an element of ``_IMPLIED_ENDS`` ends if HTML ends it before its closing tag
    (review: padding in a ``<p style="opacity:0">`` left open before the next ``<p>`` stayed
    in the reading; with a stray ``</p>`` later it hid the next paragraph too): before the
    next start tag that closes it, or an end tag of no element opened after it (its own:
    after it), whichever comes first, among the ``most`` tags after it (None: none there);
    and how many tags it read. Never past where a browser ends it: an end tag the parser
    would skip (``</b>``) ends it early."""
    closers, holders = _IMPLIED_ENDS[tag.name]
    opened: dict[str, int] = {}
    holding = 0
    read = 0
    for after in tags[tag.at + 1:tag.at + 1 + most]:
        read += 1
        if after.closing:
            if not opened.get(after.name):
                return (after.end if after.name == tag.name else after.start), read
            opened[after.name] -= 1
            holding -= after.name in holders
        elif after.name in closers and not holding:
            return after.start, read
        elif not after.self_closing and after.name not in VOID_ELEMENTS:
            opened[after.name] = opened.get(after.name, 0) + 1
            holding += after.name in holders
    return None, read


def _end_implied(tags: list[_Tag], ordered: list[_Tag]) -> None:
    """Each styled tag of ``tags`` (of one name of ``_IMPLIED_ENDS``) ends where HTML ends it
    (``_implied_end``) where that is before its closing tag, or it has none; its walks
    together read ``IMPLIED_END_READS`` times ``ordered`` at most (linear)."""
    budget = IMPLIED_END_READS * len(ordered)
    for tag in tags:
        if tag.style is not NO_STYLE and budget > 0:
            implied, read = _implied_end(ordered, tag, min(IMPLIED_END_TAGS, budget))
            budget -= read
            if implied is not None and (tag.ends_at is None or implied < tag.ends_at):
                tag.ends_at = implied


def _tags(text: str) -> tuple[dict[str, list[_Tag]], list[_Tag]] | None:
    """``text``'s tags by name and in order, None where none hides anything."""
    by_name: dict[str, list[_Tag]] = {}
    ordered: list[_Tag] = []
    hiding = False
    for match in _TAG.finditer(text):
        closing, name, attributes = bool(match.group(1)), match.group(2).lower(), match.group(3)
        if closing:
            style = NO_STYLE
        elif name in NEVER_SHOWN:
            style = _GONE
        else:
            style = element_style(attributes) if attributes else NO_STYLE
        tag = _Tag(name, len(ordered), match.start(), match.end(), closing, style,
                   attributes.endswith("/"))
        by_name.setdefault(name, []).append(tag)
        ordered.append(tag)
        hiding = hiding or style.hides
    return (by_name, ordered) if hiding else None


def without_hidden(text: str) -> str:
    """``text`` without what a renderer hides (the elements' tags and what they hold but the
    descendants that show again)."""
    if "<" not in text or not _HINT.search(text):
        return text
    return _shown_of(text)


def _shown_of(text: str) -> str:
    """``without_hidden`` past its fast scan (apart: its closures' cells cost every call)."""
    found = _tags(text)
    if found is None:
        return text
    by_name, ordered = found
    styled: list[tuple[int, int, Style]] = []  # each element a style concerns: where it is
    for name, tags in by_name.items():
        if any(tag.style is not NO_STYLE for tag in tags):
            if name in VOID_ELEMENTS:
                for tag in tags:
                    tag.ends_at = tag.end if tag.style.hides else None
            else:
                _find_ends(tags)
            if name in _IMPLIED_ENDS:
                _end_implied(tags, ordered)
            styled += ((tag.start, tag.ends_at, tag.style) for tag in tags
                       if tag.ends_at is not None)
    styled.sort(key=lambda element: element[0])
    kept: list[str] = []
    open_: list[tuple[int, _Shown]] = []  # ends fall to the top: a child ends with its parent
    at = 0

    def read_to(end: int) -> None:
        nonlocal at
        if not (open_[-1][1] if open_ else _PAGE).hidden:
            kept.append(text[at:end])
        at = end

    def close() -> None:
        read_to(open_[-1][0])
        open_.pop()

    for start, end, style in styled:
        while open_ and open_[-1][0] <= start:
            close()
        outside = open_[-1][1] if open_ else _PAGE
        inside = outside.within(style)
        if inside != outside:  # else nothing shows otherwise in it
            read_to(start)
            open_.append((min(end, open_[-1][0]) if open_ else end, inside))
    while open_:
        close()
    read_to(len(text))
    read = "".join(kept)
    return text if len(read) == len(text) else read
