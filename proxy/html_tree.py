"""Where elements end, for the judge (``proxy.hidden_elements``): a stack of open elements
kept as HTML keeps it (or closing sooner, in doubt): start tags that close (``<p>`` before a
block, ``<li>`` before the next, a heading before a heading, ruby and table parts), end tags
HTML ignores (a special element above), start tags it drops (table parts outside a table),
foreign content (``svg``, ``math``) and its end (a breakout start tag, ``</p>``, ``</br>``),
a ``select``'s end (``<input>``, ``<textarea>``), and the adoption agency of formatting
elements. Linear: each element pushed and popped once, the adoptions' work bounded
(``ADOPTION_WORK``)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from proxy.inline_styles import NO_STYLE, Style

VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                           "meta", "source", "track", "wbr", "keygen", "param", "basefont",
                           "bgsound", "frame", "image"})
"""Elements with no content or end tag: hidden, they hide only themselves."""

@dataclass(slots=True)
class Tag:
    name: str
    start: int
    end: int
    closing: bool
    style: Style
    self_closing: bool
    in_code: bool = False
    detached: bool = False
    attributes: str = ""
    """Taken off the formatting elements by HTML's adoption agency (``early_ends``)."""
    """In markdown code: maybe text (``proxy.markdown_code``)."""
    early: int | None = None
    """For a start tag with a style: the earliest place its element may end; None: none."""
    late: int | None = None
    """... the latest (its end tag of the same name); None: none."""


def late_ends(tags: list[Tag], text_end: int) -> None:
    """Set ``late`` of each start tag with a style among ``tags`` (all of one name, in order):
    the first closing tag where closing tags after it outnumber the start tags after it by
    one (the end of the text where none), found with a stack of waiting start tags."""
    waiting: list[tuple[int, Tag]] = []
    depth = 0
    for tag in tags:
        if tag.in_code and tag.closing:
            continue  # maybe text: the latest end is past it
        depth += 1 if tag.closing else -1
        while waiting and waiting[-1][0] < depth:
            waiting.pop()[1].late = tag.end
        if tag.style is not NO_STYLE:
            waiting.append((depth, tag))
    for _, tag in waiting:
        tag.late = text_end


_SPECIAL = frozenset({
    "address", "applet", "article", "aside", "blockquote", "body", "button", "caption",
    "center", "colgroup", "dd", "details", "dir", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "footer", "form", "frameset", "h1", "h2", "h3", "h4", "h5", "h6", "head",
    "header", "hgroup", "html", "iframe", "li", "listing", "main", "marquee", "menu", "nav",
    "noembed", "noframes", "noscript", "object", "ol", "p", "plaintext", "pre", "script",
    "search", "section", "select", "style", "summary", "table", "tbody", "td", "template",
    "textarea", "tfoot", "th", "thead", "title", "tr", "ul", "xmp"})
"""HTML's special elements (with content): a ``<li>`` closes no ``li`` opened before one."""
_LI_STOPS = _SPECIAL - {"address", "div", "p", "li"}
_D_STOPS = _SPECIAL - {"address", "div", "p", "dd", "dt"}
_P_STOPS = frozenset({"applet", "caption", "html", "table", "td", "th", "marquee", "object",
                      "template", "button"})
"""Where HTML stops looking for a ``p`` to close (its button scope)."""
_P_CLOSERS = frozenset({
    "address", "article", "aside", "blockquote", "center", "details", "dialog", "dir", "div",
    "dl", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "main", "menu",
    "nav", "ol", "p", "search", "section", "summary", "ul", "h1", "h2", "h3", "h4", "h5", "h6",
    "pre", "listing", "form", "li", "dd", "dt", "plaintext", "table", "hr", "xmp"})
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_FORMATTING = frozenset({"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small",
                         "strike", "strong", "tt", "u"})
"""Elements whose end tag HTML reads otherwise (the adoption agency): ends them."""
_CLOSE_OWN = {"button": ("button",), "table": ("table",), "option": ("option",),
              "optgroup": ("option", "optgroup"), "select": ("select",),
              **dict.fromkeys(("rb", "rtc", "rp", "rt"), ("rb", "rp", "rt", "rtc", "p", "li",
                                                           "dd", "dt", "option", "optgroup"))}
"""Start tags that end an open element (of these names) before them (in doubt, the nearest)."""

_IGNORED = frozenset({"html", "head", "body", "frameset"})
_TABLE_PARTS = frozenset({"caption", "colgroup", "tbody", "td", "tfoot", "th", "thead", "tr"})
"""Start tags HTML drops in a page's body (table parts outside a table)."""
_BREAKOUT = frozenset({
    "b", "big", "blockquote", "body", "br", "center", "code", "dd", "div", "dl", "dt", "em",
    "embed", "h1", "h2", "h3", "h4", "h5", "h6", "head", "hr", "i", "img", "li", "listing",
    "menu", "meta", "nobr", "ol", "p", "pre", "ruby", "s", "small", "span", "strong", "strike",
    "sub", "sup", "table", "tt", "u", "ul", "var", "font"})
"""Start tags that end ``svg`` and ``math`` content (in doubt, the innermost)."""


_RULED = (_SPECIAL | _P_CLOSERS | _HEADINGS | _IGNORED | _TABLE_PARTS | VOID_ELEMENTS
          | set(_CLOSE_OWN) | {"a", "nobr", "form", "li", "dd", "dt", "svg", "math"})
"""Start tags outside svg and math that a rule of ``early_ends`` concerns."""
ADOPTION_WORK = 8
"""Elements with a style all adoptions of a text may end, per tag of the text (review mr8:
256 per end tag made one shape 20 times slower): past it, ``early_ends`` gives up and the
text is read as written (in doubt, shown). Linear."""


def _key(name: str) -> str:
    return "h1" if name in _HEADINGS else name


def early_ends(ordered: list[Tag], unhidden: Callable[[Tag], Style]) -> bool:
    """Set ``early`` of each start tag with a style: where a stack of open elements, kept as
    HTML keeps it (or closing sooner, in doubt), pops it. ``unhidden``: a tag's style but its
    ``hidden`` attribute (in ``svg`` and ``math``). False: past ``ADOPTION_WORK``, not read."""
    work = ADOPTION_WORK * len(ordered)
    stack: list[Tag] = []
    where: dict[str, list[int]] = {}
    stops: tuple[list[int], ...] = ([], [], [], [])
    stop_sets = (_LI_STOPS, _D_STOPS, _P_STOPS, _SPECIAL)

    styled: list[int] = []  # where the elements with a style are on the stack

    def pop_to(index: int, at: int, own: int) -> None:
        while len(stack) > index:
            element = stack.pop()
            if not element.detached:
                where[_key(element.name)].pop()
            for found in (*stops, styled):
                if found and found[-1] == len(stack):
                    found.pop()
            if element.style is not NO_STYLE:
                end = own if len(stack) == index else at
                element.early = end if element.early is None else min(element.early, end)

    def adopt(name: str, at: int, own: int) -> bool:
        """HTML's adoption agency for a formatting element's end tag: with a special element
        above it (the furthest block), that block leaves the elements between (a clone of
        the formatting element wraps what it holds): those end where the block starts, and
        the block too where the element may show again; the stack is left as it is, the
        element detached."""
        index = where[name][-1]
        block = bisect.bisect_right(stops[3], index)
        nonlocal work
        if block == len(stops[3]):
            pop_to(index, at, own)
            return True
        start = stack[stops[3][block]].start
        reveals = stack[index].style.visible or stack[index].style.sized
        first = bisect.bisect_left(styled, index)
        work -= len(styled) - first
        if work < 0:
            return False
        for held in styled[first:]:
            element = stack[held]
            if held > stops[3][block]:  # clones of a formatting element may wrap its text
                above = bisect.bisect_right(stops[3], held)  # and blocks leave their parents
                end = element.start if reveals and (
                    element.style.visible is False or element.style.sized is False) else (
                    stack[stops[3][above]].start if above < len(stops[3])
                    and element.name not in _SPECIAL else None)
                if end is None:
                    continue
            else:
                end = at if held == stops[3][block] and not reveals else start
            element.early = end if element.early is None else min(element.early, end)
        where[name].pop()
        stack[index].detached = True
        pop_to(stops[3][block] + 1, at, at)  # what the block held is in the clone
        return True

    def top(names: tuple[str, ...]) -> int:
        return max((where[n][-1] for n in names if where.get(n)), default=-1)

    for tag in ordered:
        name = tag.name
        if tag.closing:
            if name in ("p", "br") and (where.get("svg") or where.get("math")):
                pop_to(min(where[n][0] for n in ("svg", "math") if where.get(n)), tag.start,
                       tag.start)  # ends foreign content (the outermost, in doubt)
            if name in _FORMATTING and where.get(name):
                if not adopt(name, tag.start, tag.end):
                    return False
            elif name != "br" and (open_ := where.get(_key(name))) and (
                    name in _SPECIAL or not stops[3]
                    or stops[3][-1] < open_[-1]):  # else a special element above: ignored
                pop_to(open_[-1], tag.start, tag.end)
            continue
        if name not in _RULED and not (where.get("svg") or where.get("math")):
            where.setdefault(name, []).append(len(stack))  # most tags: no rule applies
            if tag.style is not NO_STYLE:
                styled.append(len(stack))
            stack.append(tag)
            continue
        if name in ("input", "keygen", "textarea") and where.get("select"):
            pop_to(where["select"][-1], tag.start, tag.start)  # they end a select
        if name in _BREAKOUT and (where.get("svg") or where.get("math")):
            pop_to(min(where[n][0] for n in ("svg", "math") if where.get(n)), tag.start,
                   tag.start)  # the outermost, in doubt
        foreign = bool(where.get("svg") or where.get("math"))
        if foreign and tag.style.gone:
            tag.style = unhidden(tag)  # no hidden attribute there, in doubt
        elif name in _IGNORED or (name in _TABLE_PARTS and not foreign
                                  and not where.get("table")) or (
                name == "form" and where.get("form")):
            tag.style = NO_STYLE  # HTML drops the tag: it holds nothing
            continue
        elif name in _TABLE_PARTS and not foreign:  # in svg, no table part
            pop_to(top(("table",)) + 1, tag.start, tag.start)  # back to the table
        if name in _P_CLOSERS and top(("p",)) > (stops[2][-1] if stops[2] else -1):
            pop_to(top(("p",)), tag.start, tag.start)
        if name == "li" and top(("li",)) > (stops[0][-1] if stops[0] else -1):
            pop_to(top(("li",)), tag.start, tag.start)
        elif name in ("dd", "dt") and top(("dd", "dt")) > (stops[1][-1] if stops[1] else -1):
            pop_to(top(("dd", "dt")), tag.start, tag.start)
        elif name in _HEADINGS and stack and stack[-1].name in _HEADINGS:
            pop_to(len(stack) - 1, tag.start, tag.start)
        elif name in ("a", "nobr") and where.get(name):
            if not adopt(name, tag.start, tag.start):
                return False
        elif name in _CLOSE_OWN and (at := top(_CLOSE_OWN[name])) >= 0:
            pop_to(at, tag.start, tag.start)
        if name in VOID_ELEMENTS or (tag.self_closing and foreign) or (
                name == "form" and top(("td", "th", "caption")) < top(("table",))):
            tag.early = tag.late = tag.end if tag.style is not NO_STYLE else None
            continue
        if name in _SPECIAL and not foreign:  # in svg, not HTML's
            for found, names in zip(stops, stop_sets, strict=True):
                if name in names:
                    found.append(len(stack))
        where.setdefault(_key(name), []).append(len(stack))
        if tag.style is not NO_STYLE:
            styled.append(len(stack))
        stack.append(tag)
    return True
