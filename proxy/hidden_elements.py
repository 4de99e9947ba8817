"""Elements a renderer hides, for the judge (``proxy.shown_text``): an element with the
``hidden`` attribute, or a style of ``display: none`` or ``visibility: hidden``, shows nothing
of what it holds (``st<span style="display:none">qzx</span>ab`` shows "stab").

Only an attribute named ``hidden`` and a ``style`` attribute's properties hide (review rv5: a
``hidden`` anywhere in the attributes, ``<span title="not hidden">``, dropped a shown element
from the main reading). The element ends at its closing tag of the same name in any case, past
its child elements and nested ones of its name (``<SPAN hidden><b>x</b></span>``); its name is
any custom element's (``<my-note-element hidden>``). An element that never closes is left as
written, and so is everything after it (a renderer hides it all: nothing shown after it).
Linear: each tag is read once, an element's end is looked for once per name.
"""

from __future__ import annotations

import functools
import re

_HINT = re.compile(r"hidden|display|visibility", re.IGNORECASE)
"""What a hiding tag holds: a fast scan, since most text has none."""
_OPENING = re.compile(r"<([A-Za-z][A-Za-z0-9-]{0,63}+)(\s[^<>]*+)>")
"""A start tag with attributes (each part stops at the next ``<`` or ``>``: linear)."""
_ATTRIBUTE = re.compile(r"""([^\s"'<>/=]++)(?:\s*+=\s*+(?:"([^"]*+)"|'([^']*+)'|([^\s"'<>=`]++)))?""")
"""One attribute of a tag: its name, and its value quoted either way or not."""
_STYLE_HIDES = re.compile(r"(?:^|;)\s*+(?:display\s*+:\s*+none|visibility\s*+:\s*+(?:hidden|"
                          r"collapse))\s*+(?:!\s*+important\s*+)?(?:;|$)", re.IGNORECASE)
"""A style declaration that hides its element."""


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


@functools.lru_cache(maxsize=256)
def _same_name(name: str) -> re.Pattern[str]:
    """A start or end tag of ``name``, in any case."""
    return re.compile(rf"<(/?){re.escape(name)}(?=[\s/>])[^<>]*+>", re.IGNORECASE)


def _end(text: str, name: str, start: int) -> int | None:
    """Where the element of ``name`` opened before ``start`` ends (past its closing tag), past
    nested elements of its name; None if it never closes."""
    depth = 1
    for tag in _same_name(name.lower()).finditer(text, start):
        if tag.group(1):
            depth -= 1
            if not depth:
                return tag.end()
        elif not tag.group().endswith("/>"):
            depth += 1
    return None


def without_hidden(text: str) -> str:
    """``text`` without the elements a renderer hides (their tags and what they hold)."""
    if "<" not in text or not _HINT.search(text):
        return text
    kept: list[str] = []
    at = 0
    for opening in _OPENING.finditer(text):
        if opening.start() < at or not hides(opening.group(2)):
            continue
        end = _end(text, opening.group(1), opening.end())
        if end is None:  # never closes: it and all after it read as written
            break
        kept.append(text[at:opening.start()])
        at = end
    return "".join([*kept, text[at:]]) if kept else text
