"""What an element's inline ``style`` does to what a rendered page shows of it, for the judge
(``proxy.hidden_elements``): ``display: none`` and an ``opacity`` of 0 (or too faint to read,
``FAINT_OPACITY``) show nothing of what it holds, whatever its descendants say
(``Style.gone``); ``visibility: hidden`` and a ``font-size`` of 0 (``0px``, ``0em``, ``0%``,
the ``font`` shorthand's ``0/0 a``, or too small to read, ``TINY_PX``) hide its own text, but
a descendant with ``visibility: visible`` or a font size of its own shows again
(``Style.visible``, ``Style.sized``). A threat padded with gardening tips in ``opacity:0`` or
``font-size:0`` spans read as the tips (mft.care 0.01 for 0.54 plain).

Read as a browser reads a style: comments left out, the last valid declaration of a property
wins, an ``!important`` one over later ones; a value it would not take (``opacity: x``) is
ignored, so an earlier one stands. Not read (an element so hidden stays in the main reading,
as written): ``calc()``, CSS escapes, style sheets and classes, and hiding by size, position,
clipping or colour (``height: 0``, ``left: -9999px``, ``color: transparent``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_NUMBER = r"[+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?"
_AMOUNT = re.compile(rf"({_NUMBER})([a-zA-Z]*+|%)")
"""A number and its unit (none, a length's, or ``%``)."""
_IMPORTANT = re.compile(r"!\s*+important\s*+$", re.IGNORECASE)
_GLOBAL = frozenset({"inherit", "unset", "revert", "revert-layer"})
"""Keywords that keep what the parent sets (for the inherited properties read here)."""
_SIZES = frozenset({"xx-small", "x-small", "small", "medium", "large", "x-large", "xx-large",
                    "xxx-large", "initial"})
_SIZE_RELATIVE = _GLOBAL | {"larger", "smaller", "math"}
_FONT_SIZE = re.compile(rf"(?:^|(?<=\s))(?:({_NUMBER})([a-zA-Z]*+|%)|([a-z-]++))"
                        r"(?=(?:\s*+/\s*+[^\s/]++)?\s++\S)")
"""A token of the ``font`` shorthand that may be its size: before its ``/line-height`` and its
family (``font: 0/0`` sets nothing: a browser takes no ``font`` without a family, and an
unquoted ``style=font:0/0 a`` ends before ``a``)."""
_FONT_SYSTEM = frozenset({"caption", "icon", "menu", "message-box", "small-caption",
                          "status-bar"})
_DISPLAYS = frozenset({
    "block", "inline", "run-in", "flow", "flow-root", "table", "flex", "grid", "ruby", "math",
    "list-item", "contents", "inline-block", "inline-table", "inline-flex", "inline-grid",
    "table-row-group", "table-header-group", "table-footer-group", "table-row", "table-cell",
    "table-column-group", "table-column", "table-caption", "ruby-base", "ruby-text",
    "ruby-base-container", "ruby-text-container", "-webkit-box", "-webkit-inline-box",
    "-moz-box", "-moz-inline-box", "-ms-flexbox", "-ms-inline-flexbox", "initial", "inherit",
    "unset", "revert", "revert-layer"})
"""``display`` keywords (one to three make a value): a value that shows the element."""


@dataclass(frozen=True, slots=True)
class Style:
    """What a style sets: ``gone``, nothing it holds shows; ``visible`` and ``sized``, its
    visibility and whether its font has a size (None: as its parent's); ``displayed``, a
    ``display`` that shows it (which overrides the ``hidden`` attribute)."""

    gone: bool = False
    visible: bool | None = None
    sized: bool | None = None
    displayed: bool = False

    @property
    def hides(self) -> bool:
        return self.gone or self.visible is False or self.sized is False


NO_STYLE = Style()


FAINT_OPACITY = 0.05
"""The highest opacity that shows a person nothing to read (black text on white at 5% is
#f2f2f2): ``opacity: 0.01`` hides padding as ``0`` does."""
TINY_PX = 2.0
"""The smallest font size, in CSS pixels, a person reads anything of: ``1px`` or ``0.05em``
hides padding as ``0`` does."""
_PX = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4,
       "q": 96 / 101.6, "rem": 16.0, "rlh": 19.2}
"""CSS pixels a unit is (``rem`` of the usual 16px root)."""
_EM = {"em": 16.0, "%": 0.16, "ex": 8.0, "ch": 8.0, "cap": 11.2, "ic": 16.0, "lh": 19.2}
"""CSS pixels a relative unit is, of the usual 16px parent: below ``TINY_PX`` whatever the
parent's size a reply sets, in practice."""


def _opacity(value: str) -> bool | None:
    """Whether an ``opacity`` hides (``FAINT_OPACITY`` or less); None: no value a browser
    takes."""
    amount = _AMOUNT.fullmatch(value)
    if amount and amount.group(2) in ("", "%"):
        return float(amount.group(1)) / (100 if amount.group(2) else 1) <= FAINT_OPACITY
    return False if value in _GLOBAL or value == "initial" else None


def _size(number: str, unit: str) -> bool | None:
    """Whether a font size of ``number`` ``unit`` shows: False, below ``TINY_PX``; None,
    relative to the parent's (``2em``); ValueError: a browser takes no such size."""
    amount, unit = float(number), unit.lower()
    if amount == 0:
        return False
    if amount < 0:
        raise ValueError(number)
    px = amount * (_PX.get(unit) or _EM.get(unit) or TINY_PX)  # unknown units: shown
    if px < TINY_PX:
        return False
    return None if unit in _EM else True


def _font_size(value: str) -> bool | None | str:
    """A ``font-size`` value as ``_size`` reads it; "": none a browser takes."""
    amount = _AMOUNT.fullmatch(value)
    try:
        if amount:
            return _size(amount.group(1), amount.group(2))
    except ValueError:
        return ""
    return True if value in _SIZES else None if value in _SIZE_RELATIVE else ""


def _font(value: str) -> bool | None | str:
    """The size the ``font`` shorthand sets (``_font_size``): its first token that is a size
    (a unitless number other than 0 is a weight, ``700``)."""
    if value in _FONT_SYSTEM:
        return True
    if value in _GLOBAL or value == "initial":
        return _font_size(value)
    for token in _FONT_SIZE.finditer(value):
        number, unit, word = token.groups()
        if word is not None:
            if word in _SIZES or word in _SIZE_RELATIVE:
                return _font_size(word)
        elif unit or float(number) == 0:
            try:
                return _size(number, unit)
            except ValueError:
                return ""
    return ""


def _uncommented(style: str) -> str:
    """``style`` without its comments (an unclosed one runs to its end): one pass."""
    if "/*" not in style:
        return style
    parts, at = [], 0
    while (start := style.find("/*", at)) >= 0:
        parts.append(style[at:start])
        end = style.find("*/", start + 2)
        at = len(style) if end < 0 else end + 2
    return "".join([*parts, style[at:]])


CACHED_CHARS = 256
"""The longest style whose reading is kept (``_cached``): a page repeats its few styles."""


def style_of(style: str) -> Style:
    """What the declarations of a ``style`` attribute's value set (module docstring)."""
    return _cached(style) if len(style) <= CACHED_CHARS else _read(style)


_Read = bool | str | None
"""A declaration's value as read: what it sets (None: no value a browser takes)."""


def _value(name: str, value: str) -> _Read:
    """A declaration of one of ``_PROPERTIES`` read: ``display`` "none" or "shown";
    ``visibility`` shown or not, or "inherit"; ``opacity`` whether it hides; a font size
    whether it shows, or "inherit" (relative to the parent's)."""
    if name == "display":
        words = value.split()
        if value == "none":
            return "none"
        return "shown" if 0 < len(words) <= 3 and all(w in _DISPLAYS for w in words) else None
    if name == "visibility":
        return ({"hidden": False, "collapse": False, "visible": True, "initial": True}
                .get(value, "inherit" if value in _GLOBAL else None))
    if name == "opacity":
        return _opacity(value)
    size = (_font_size if name == "font-size" else _font)(value)
    return None if size == "" else "inherit" if size is None else size


_PROPERTIES = {"display": "display", "visibility": "visibility", "opacity": "opacity",
               "font-size": "font-size", "font": "font-size"}
"""The properties read, to the one each sets (the ``font`` shorthand sets the size)."""


def _read(style: str) -> Style:
    taken: dict[str, tuple[_Read, bool]] = {}
    for declaration in _uncommented(style).split(";"):
        name, colon, value = declaration.partition(":")
        name = name.strip().lower()
        if not colon or name not in _PROPERTIES:
            continue
        important = "!" in value and bool(_IMPORTANT.search(value))
        read = _value(name, (_IMPORTANT.sub("", value) if important else value).strip().lower())
        sets = _PROPERTIES[name]
        if read is not None and (sets not in taken or important or not taken[sets][1]):
            taken[sets] = (read, important)
    if not taken:
        return NO_STYLE
    display, visibility, opacity, size = (taken.get(n, (None, False))[0] for n in (
        "display", "visibility", "opacity", "font-size"))
    return Style(gone=display == "none" or opacity is True,
                 visible=visibility if isinstance(visibility, bool) else None,
                 sized=size if isinstance(size, bool) else None,
                 displayed=display == "shown")


_cached = functools.lru_cache(maxsize=1024)(_read)
