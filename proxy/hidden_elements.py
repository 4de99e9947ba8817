"""Elements a renderer hides, for the judge (``proxy.shown_text``): a ``script``, ``style`` or
``template`` element (``NEVER_SHOWN``), an element with the ``hidden`` attribute (unless its
style sets a ``display``; ``hidden="until-found"`` whatever its display, but on an inline
box), or a style that hides it (``proxy.inline_styles``: ``display: none``, ``opacity: 0``,
``visibility: hidden``, ``font-size: 0``) shows nothing of what it holds
(``st<span style="display:none">qzx</span>ab`` shows "stab"), but the descendants that show
again inside the last two (``visibility: visible``, a size of their own: a style's, or a
heading's, a form control's, ``<big>``'s, ``<font size>``'s).

When in doubt, text is shown (review mr2: a visible threat misread as hidden, padded with
truly hidden text, passed). Tags are read as HTML tokenizes them (``_TOKEN``): comments and
the text of ``script``, ``style``, ``textarea``, ``title`` and the like hold no tags; a quoted
value runs to its quote, ``<`` and ``>`` included; an unquoted one to a space, quotes included
(``<span title=x"style=display:none">`` has one attribute); character references in a
``style`` are read as HTML reads an attribute's (``&quotx`` stays as written); names are
lowercased in ASCII only. After a ``svg`` or ``math`` start tag, raw text and ``<![CDATA[``
may be either (foreign content has no raw text; CDATA runs to ``]]>``): what they hold is
read as maybe text, as in markdown code. In markdown code (a fenced block, a code span) a
tag may show as written: there it hides nothing and starts no comment, but may end an
element. Where an element
ends is read from a stack of open elements (``proxy.html_tree``): one that hides ends at the
earliest place HTML may end it (its end tag, an end tag of an element opened before it, a
start tag that closes it: ``<p>`` before a ``<div>``, ``<li>`` before the next, a heading
before a heading; not an end tag HTML ignores, a special element's above its element's); one
that shows again inside hidden text at the latest (that, or its end tag of the same name,
``proxy.html_tree``). An element that never ends is left as written. Start tags HTML drops (a
``<td>`` outside a table, a ``<body>``) hold nothing; styles on tables, their rows and
sections (text in them may be moved out of the table) are read only where they show text
again. Linear: one pass over the tags, each element pushed and popped once (past
``proxy.html_tree.ADOPTION_WORK``, the text is read as written).
"""

from __future__ import annotations

import functools
import html
import re
from dataclasses import dataclass
from html.entities import html5 as _ENTITIES

from proxy.html_tree import VOID_ELEMENTS, Tag, early_ends, late_ends
from proxy.inline_styles import NO_STYLE, Style, style_of
from proxy.markdown_code import code_spans

_HINT = re.compile(r"hidden|style\s*+=|<(?:script|style|template)(?=[\s/>])", re.IGNORECASE)
"""What a hiding tag holds (an attribute's name) or is (``NEVER_SHOWN``): a fast scan, since
most text has none."""
_S = "\t\n\f\r "
_ATTRIBUTES = (rf"(?:[{_S}/]++|[^{_S}/>][^{_S}/>=]*+"
               rf"""(?:[{_S}]*+=[{_S}]*+(?:"[^"]*+"?|'[^']*+'?|[^{_S}>]*+))?)*+""")
_TOKEN = re.compile(r"<!--(?:-?>|(?s:.)*?(?:--!?>|\Z))|<(?:[!?]|/(?![A-Za-z]))[^>]*+>?"
                    rf"|<(/?)([A-Za-z][^{_S}/>]*+)({_ATTRIBUTES})(>?)")
"""A comment (to ``-->`` or the end), a bogus one (``<!x>``, ``<?x>``, ``</ x>``), or a start or
end tag: its name, its attributes as HTML tokenizes them, and its ``>`` (none: the text ends
inside the tag, which HTML then drops). Linear: nothing in it backtracks past a character."""
_TAG_TOKEN = re.compile(rf"<(/?)([A-Za-z][^{_S}/>]*+)({_ATTRIBUTES})(>?)")
"""A start or end tag as ``_TOKEN`` reads one (the same groups), for maybe text in foreign
content: no comments (one left open there would be scanned to the end at each ``<!--``)."""
_ATTRIBUTE = re.compile(rf"""([^{_S}/>][^{_S}/>=]*+)(?:[{_S}]*+=[{_S}]*+"""
                        rf"""(?:"([^"]*+)"?|'([^']*+)'?|([^{_S}>]*+)))?""")
"""One attribute of a tag: its name, and its value quoted either way or not."""
_REFERENCE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
"""A character reference as ``html.unescape`` finds one."""
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
"""HTML lowercases names in ASCII only (review mr8: ``str.lower`` reads the Kelvin sign as
"k", ``<blocKquote>`` as a blockquote)."""


def attribute_value(value: str) -> str:
    """``value`` with its character references read as HTML reads an attribute's: a named one
    without ``;`` followed by a letter, a digit or ``=`` stays as written (review mr8:
    ``html.unescape`` read ``&quotx`` as ``"x``)."""
    if "&" not in value:
        return value

    def one(found: re.Match[str]) -> str:
        reference = found.group(1)
        if reference[0] == "#" or reference.endswith(";") and reference in _ENTITIES:
            return html.unescape(found.group(0))
        for length in range(len(reference) - reference.endswith(";"), 1, -1):
            if reference[:length] in _ENTITIES:
                after = (reference[length:length + 1] if length < len(reference)
                         else value[found.end():found.end() + 1])
                if after == "=" or (after.isascii() and after.isalnum()):
                    return found.group(0)
                return _ENTITIES[reference[:length]] + reference[length:]
        return found.group(0)

    return _REFERENCE.sub(one, value)


_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed",
                       "noframes", "noscript"})
"""Elements whose text holds no tags: read to their end tag."""
NEVER_SHOWN = frozenset({"script", "style", "template"})
"""Elements whose content a renderer never shows, whatever their attributes (review r2:
``Gr<style>q</style>ab`` shows "Grab" and was read "Grqab", which passed every clear case)."""
_UNREAD = frozenset({"table", "thead", "tbody", "tfoot", "tr", "colgroup", "html", "head",
                     "body"})
"""Elements whose style is read only where it shows text again (in doubt, shown: in svg a
``tr`` is no table row; review mr8)."""
_SIZED = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "big", "button", "input", "select",
                    "textarea", "svg", "math"})
"""Elements that may show text at a size of their own inside a parent of size 0."""
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div",
    "dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu",
    "nav", "ol", "p", "search", "section", "summary", "ul", "h1", "h2", "h3", "h4", "h5", "h6",
    "pre", "listing", "form", "li", "dd", "dt", "plaintext", "xmp", "legend", "optgroup",
    "option"})
"""Elements a renderer lays out as blocks (``content-visibility`` applies to them)."""
_GONE = Style(gone=True)


def element_style(attributes: str, name: str = "", hidden_read: bool = True) -> Style:
    """What a start tag's ``attributes`` do to what shows of its element ``name``: its
    ``style`` (``proxy.inline_styles``), and an attribute named ``hidden`` as ``display: none``
    unless that style sets a ``display`` (not a value that says "hidden", not ``aria-hidden``,
    which hides from a screen reader only); ``hidden="until-found"`` whatever the display,
    where ``content-visibility`` applies (a block, not an inline box; in doubt, shown)."""
    hidden, style, sized, visible = None, None, name in _SIZED, None
    for attribute in _ATTRIBUTE.finditer(attributes):
        key = attribute.group(1).translate(_ASCII_LOWER)
        value = next((v for v in attribute.groups()[1:] if v is not None), "")
        if key == "hidden" and hidden is None and hidden_read:  # the first counts, in HTML
            hidden = attribute_value(value)
        elif key == "style" and style is None:
            style = style_of(attribute_value(value))
        elif key in ("size", "font-size") and name in ("font", "text", "tspan", ""):
            sized = True
        elif key == "visibility" and visible is None:  # SVG's, or in doubt, shown
            visible = attribute_value(value).strip().translate(_ASCII_LOWER) == "visible"
    style = style or NO_STYLE
    if visible and style.visible is None:
        style = Style(style.gone, True, style.sized, style.displayed, style.inline,
                      style.unsure_until)
    if sized and style.sized is None:
        style = Style(style.gone, style.visible, True, style.displayed, style.inline,
                      style.unsure_until)
    if hidden is None or style.gone:
        return style
    if hidden.translate(_ASCII_LOWER) == "until-found":
        block = not style.inline if style.inline is not None else name in _BLOCKS
        if not block or style.unsure_until:
            return style
    elif style.displayed:
        return style
    return Style(True, style.visible, style.sized)


_element_style_cached = functools.lru_cache(maxsize=1024)(element_style)
"""A page repeats its few start tags' attributes."""


def _unhidden(tag: Tag) -> Style:
    """``tag``'s style but its ``hidden`` attribute (``proxy.html_tree``: in ``svg``)."""
    return tag.style if tag.name in NEVER_SHOWN else element_style(tag.attributes, tag.name,
                                                                   hidden_read=False)


def hides(attributes: str, name: str = "") -> bool:
    """Whether a start tag's ``attributes`` hide its element's own text (``element_style``)."""
    return element_style(attributes, name).hides


def _tags(text: str) -> list[Tag] | None:
    """``text``'s tags in order, as HTML tokenizes them; None where none hides anything. In
    markdown code (``proxy.markdown_code``) a tag may be text: one there hides nothing (it
    may show again), and it starts no comment or raw text. So after a ``svg`` or ``math``
    start tag (review mr8): in foreign content ``title``, ``style``, ``textarea`` and the like
    start no raw text and ``<![CDATA[`` runs to ``]]>``, so what HTML would read as their
    text or as a bogus comment is read as maybe text (in doubt: a ``</span>`` there may end
    an element, a ``<span hidden>`` hides nothing)."""
    tags: list[Tag] = []
    hiding = foreign = False
    doubt_end, read_to = -1, 0  # maybe text before doubt_end (foreign content): tags only
    code, next_code = code_spans(text), 0
    matches, tags_only = _TOKEN.finditer(text), False
    while (match := next(matches, None)) is not None:
        start, at = match.span()
        if tags_only and start >= doubt_end:  # past maybe text: comments again
            matches, tags_only = _TOKEN.finditer(text, max(doubt_end, read_to)), False
            continue
        read_to = at
        in_code = start < doubt_end
        if code and not in_code:
            while next_code < len(code) and code[next_code][1] <= start:
                next_code += 1
            in_code = next_code < len(code) and code[next_code][0] <= start
        closing, name, attributes, gt = match.groups()
        if name is None:
            if foreign and not in_code and text.startswith("<![CDATA[", start):
                cdata_end = text.find("]]>", start + 9)
                doubt_end = len(text) if cdata_end < 0 else cdata_end + 3
                matches, tags_only = _TAG_TOKEN.finditer(text, start + 1), True
            elif in_code:  # maybe text to the code's end: what it holds is read, tags only
                if start >= doubt_end:  # in markdown code (next_code is its span)
                    doubt_end = code[next_code][1]
                matches, tags_only = _TAG_TOKEN.finditer(text, start + 1), True
            continue  # a comment
        if not gt:
            break  # the text ends inside the tag
        name = name.translate(_ASCII_LOWER)
        foreign = foreign or (name in ("svg", "math") and not closing)
        if closing or (name in _UNREAD and not attributes):
            style = NO_STYLE
        elif name in NEVER_SHOWN:
            style = _GONE
        elif attributes or name in _SIZED:
            style = (_element_style_cached(attributes, name) if len(attributes) <= 256
                     else element_style(attributes, name))
        else:
            style = NO_STYLE
        if (in_code or name in _UNREAD) and style.hides:  # may show again, hides nothing
            style = Style(visible=style.visible or None, sized=style.sized or None)
        tags.append(Tag(name, start, at, bool(closing), style, attributes.endswith("/"),
                        in_code, attributes=attributes))
        hiding = hiding or style.hides
        if closing or in_code:
            continue
        if name in _RAW_TEXT:
            end = re.compile(rf"</{name}(?=[{_S}/>])", re.IGNORECASE | re.ASCII).search(text, at)
            if foreign:  # maybe foreign content: its text may hold tags
                doubt_end = max(len(text) if end is None else end.start(),
                                _foreign_end(text, at, name))
                matches, tags_only = _TAG_TOKEN.finditer(text, at), True
            elif end is None:
                break  # the rest is its text
            else:
                matches = _TOKEN.finditer(text, end.start())
        elif name == "plaintext":
            if not foreign:
                break
            doubt_end = len(text)
            matches, tags_only = _TAG_TOKEN.finditer(text, at), True
    return tags if hiding else None


def _foreign_end(text: str, at: int, name: str) -> int:
    """Where an element ``name`` starting at ``at`` ends in foreign content: at its first end
    tag past comments, CDATA sections and attribute values (the end of the text where none)."""
    matches = _TOKEN.finditer(text, at)
    while (match := next(matches, None)) is not None:
        if match.group(2) is None:
            if text.startswith("<![CDATA[", match.start()):
                cdata_end = text.find("]]>", match.start() + 9)
                if cdata_end < 0:
                    break
                matches = _TOKEN.finditer(text, cdata_end + 3)
        elif match.group(1) and match.group(2).translate(_ASCII_LOWER) == name:
            return match.start()
    return len(text)


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

    def reveals(self, inside: _Shown) -> bool:
        """Whether ``inside`` (of an element in this) shows what this hides."""
        return (self.invisible and not inside.invisible) or (
            self.unsized and not inside.unsized)

    @property
    def hidden(self) -> bool:
        return self.gone or self.invisible or self.unsized


_PAGE = _Shown()


def without_hidden(text: str) -> str:
    """``text`` without what a renderer hides (the elements' tags and what they hold but the
    descendants that show again)."""
    if "<" not in text or not _HINT.search(text):
        return text
    return _shown_of(text)


def _shown_of(text: str) -> str:
    """``without_hidden`` past its fast scan (apart: its closures' cells cost every call)."""
    ordered = _tags(text)
    if ordered is None:
        return text
    if not early_ends(ordered, _unhidden):
        return text  # too much to read: as written (in doubt, shown)
    by_name: dict[str, list[Tag]] = {}
    for tag in ordered:
        if tag.name not in VOID_ELEMENTS:
            by_name.setdefault(tag.name, []).append(tag)
    styled: list[Tag] = []
    for tags in by_name.values():
        if any(tag.style is not NO_STYLE for tag in tags):
            late_ends(tags, len(text))
            for tag in tags:
                if tag.style is not NO_STYLE:
                    tag.late = max(tag.late or 0, len(text) if tag.early is None else tag.early)
                    styled.append(tag)
    styled += (tag for tag in ordered if tag.name in VOID_ELEMENTS and tag.early is not None)
    styled.sort(key=lambda element: element.start)
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

    for tag in styled:
        while open_ and open_[-1][0] <= tag.start:
            close()
        outside = open_[-1][1] if open_ else _PAGE
        inside = outside.within(tag.style)
        end = tag.late if outside.reveals(inside) else tag.early
        if inside != outside and end is not None:  # else nothing shows otherwise in it
            read_to(tag.start)
            open_.append((min(end, open_[-1][0]) if open_ else end, inside))
    while open_:
        close()
    read_to(len(text))
    read = "".join(kept)
    return text if len(read) == len(text) else read
