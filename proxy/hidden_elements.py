"""Elements a renderer hides, for the judge (``proxy.shown_text``): an element with the
``hidden`` attribute, or a style of ``display: none`` or ``visibility: hidden``, shows nothing
of what it holds (``st<span style="display:none">qzx</span>ab`` shows "stab").

Only an attribute named ``hidden`` and a ``style`` attribute's properties hide (review rv5: a
``hidden`` anywhere in the attributes, ``<span title="not hidden">``, dropped a shown element
from the main reading). Attributes follow the name after whitespace or ``/`` (``<span/hidden>``,
as HTML parsers read it), and a ``>`` inside a quoted value does not end the tag
(``<span title="a>b" hidden>``). The element ends at its closing tag of the same name in any
case, past its child elements and nested ones of its name (``<SPAN hidden><b>x</b></span>``);
its name is any custom element's (``<my-note-element hidden>``). A void element
(``<br hidden>``, ``<img hidden src=x>``) hides only itself; an element that never closes is
left as written, and the elements after it are still read (review: a ``<br hidden>`` before a
reply left every later hidden element in the reading, 0.34 for 0.68 on mft.care).
Linear: each tag is read once, in one pass; each element's end is found from one pass over
the tags of its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HINT = re.compile(r"hidden|display|visibility", re.IGNORECASE)
"""What a hiding tag holds: a fast scan, since most text has none."""
_TAG = re.compile(r"""<(/?)([A-Za-z][A-Za-z0-9-]{0,63}+)(?=[\s/>])"""
                  r"""((?:[^<>"']++|"[^"<]*+"|'[^'<]*+'|["'])*+)>""")
"""A start or end tag: its name, then its attributes, a quoted value read whole (a ``>`` in it
ends nothing; an unclosed quote is a character). No part crosses a ``<``: each try stops at
the next one, so a pass is linear."""
_ATTRIBUTE = re.compile(r"""([^\s"'<>/=]++)(?:\s*+=\s*+(?:"([^"]*+)"|'([^']*+)'|([^\s"'<>=`]++)))?""")
"""One attribute of a tag: its name, and its value quoted either way or not."""
_STYLE_HIDES = re.compile(r"(?:^|;)\s*+(?:display\s*+:\s*+none|visibility\s*+:\s*+(?:hidden|"
                          r"collapse))\s*+(?:!\s*+important\s*+)?(?:;|$)", re.IGNORECASE)
"""A style declaration that hides its element."""
VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                           "meta", "source", "track", "wbr"})
"""Elements with no content or end tag: hidden, they hide only themselves."""


def hides(attributes: str) -> bool:
    """Whether a start tag's ``attributes`` hide its element: an attribute named ``hidden``,
    or a ``style`` with ``display: none`` or ``visibility: hidden`` (not a value that says
    "hidden", not ``aria-hidden``, which hides from a screen reader only)."""
    for attribute in _ATTRIBUTE.finditer(attributes):
        name = attribute.group(1).lower()
        if name == "hidden":
            return True
        if name == "style":
            value = next((v for v in attribute.groups()[1:] if v is not None), "")
            if _STYLE_HIDES.search(value):
                return True
    return False


@dataclass(slots=True)
class _Tag:
    start: int
    end: int
    closing: bool
    hidden: bool
    self_closing: bool
    ends_at: int | None = None
    """For a hidden start tag: where its element ends (past its closing tag); None: never."""


def _find_ends(tags: list[_Tag]) -> None:
    """Set ``ends_at`` of each hidden start tag among ``tags`` (all of one name, in order):
    its element ends at the first closing tag where closing tags after it outnumber the start
    tags after it (those not ``/>``) by one. With ``depth`` the closing tags less the start
    tags so far, that is the first tag after it whose ``depth`` exceeds its own: each waiting
    start tag is answered once (a stack of them, their depths falling to the top)."""
    waiting: list[tuple[int, _Tag]] = []
    depth = 0
    for tag in tags:
        if tag.closing:
            depth += 1
        elif not tag.self_closing:
            depth -= 1
        while waiting and waiting[-1][0] < depth:
            waiting.pop()[1].ends_at = tag.end
        if tag.hidden:
            waiting.append((depth, tag))


def without_hidden(text: str) -> str:
    """``text`` without the elements a renderer hides (their tags and what they hold)."""
    if "<" not in text or not _HINT.search(text):
        return text
    by_name: dict[str, list[_Tag]] = {}
    hidden: list[tuple[str, _Tag]] = []
    for match in _TAG.finditer(text):
        closing, name, attributes = bool(match.group(1)), match.group(2).lower(), match.group(3)
        tag = _Tag(match.start(), match.end(), closing,
                   not closing and bool(attributes) and hides(attributes),
                   attributes.endswith("/"))
        by_name.setdefault(name, []).append(tag)
        if tag.hidden:
            hidden.append((name, tag))
    if not hidden:
        return text
    for name in {name for name, _ in hidden}:
        _find_ends(by_name[name])
    kept: list[str] = []
    at = 0
    for name, tag in hidden:
        end = tag.end if name in VOID_ELEMENTS else tag.ends_at
        if tag.start < at or end is None:  # inside a hidden one, or never closes: as written
            continue
        kept.append(text[at:tag.start])
        at = end
    return "".join([*kept, text[at:]]) if kept else text
