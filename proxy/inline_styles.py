"""What an element's inline ``style`` does to what a rendered page shows of it, for the judge
(``proxy.hidden_elements``). When in doubt, text is shown: a style hides only what a browser
certainly hides whatever the page around it (review mr2: a visible threat in a misread style,
padded with truly hidden text, passed).

``display: none`` and an ``opacity`` of 0 (or less; not on ``display: contents``, which has no
box) show nothing of what it holds, whatever
its descendants say (``Style.gone``); ``visibility: hidden`` and a ``font-size`` of exactly 0
(``0px``, ``0em``, ``0%``, the ``font`` shorthand's ``0/0 a``) hide its own text, but a
descendant with ``visibility: visible`` or that may set a size of its own shows again
(``Style.visible``, ``Style.sized``). No threshold of "too faint" or "too small": how small a
relative size is depends on the page (``0.05em`` of a 400px parent is 20px), so only 0 hides.

Read as a browser reads a style: declarations split by a small tokenizer aware of strings,
escapes, ``url()``, brackets and comments (``font-family:"x;opacity:0"`` sets no opacity); the
last valid declaration of a property wins, an ``!important`` one over later ones; a value it
would not take (``opacity: x``, ``font-size: 0zz``, a ``font`` shorthand that does not parse
whole) is ignored, so an earlier one stands. Values in doubt show: any function (``calc()``,
``var()``, ``max()``), viewport and container units, ``larger``, ``revert``; ``zoom``,
``transform`` and ``scale`` count as a size of its own. Not read (an element so hidden stays in
the main reading, as written): CSS escapes, style sheets and classes, and hiding by size,
position, clipping or colour (``height: 0``, ``left: -9999px``, ``color: transparent``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

_NUMBER = r"[+-]?(?:[0-9]++(?:\.[0-9]++)?|\.[0-9]++)(?:[eE][+-]?[0-9]++)?"
"""CSS's number: ASCII digits, none without a digit after its dot (``0.`` is no number)."""
_AMOUNT = re.compile(rf"({_NUMBER})([a-zA-Z]*+|%)")
"""A number and its unit (none, a length's, or ``%``)."""
_IMPORTANT = re.compile(r"!\s*+important\s*+$", re.IGNORECASE)
_PIECE = re.compile(r"""/\*(?s:.)*?(?:\*/|\Z)|"(?:[^"\\\n]|\\(?s:.))*+(?:"|\Z|(?=\n))"""
                    r"""|'(?:[^'\\\n]|\\(?s:.))*+(?:'|\Z|(?=\n))|\\(?s:.)?"""
                    r"""|url\(\s*+(?!["'])(?:[^)\\]|\\(?s:.))*+\)?|[(\[{]|[)\]}]|;"""
                    r"""|[^"'/\\()\[\]{};uU]++|[/uU]""")
"""A CSS token that matters to where a declaration ends: a comment, a string (a newline ends
one), an escape, an unquoted ``url(...)`` read whole, a bracket, ``;``, or other text."""
_GLOBAL = frozenset({"inherit", "unset", "revert", "revert-layer", "initial"})
_SIZE_SHOWN = frozenset({"xx-small", "x-small", "small", "medium", "large", "x-large",
                         "xx-large", "xxx-large", "initial", "larger", "math", "revert",
                         "revert-layer"})
"""``font-size`` keywords that may set a size other than 0 inside a parent of 0."""
_SIZE_INHERITED = frozenset({"inherit", "unset", "smaller"})
_ABSOLUTE = frozenset({"px", "pt", "pc", "in", "cm", "mm", "q", "rem", "rex", "rch", "rcap",
                       "ric", "rlh", "lh", "vw", "vh", "vi", "vb", "vmin", "vmax", "svw", "svh",
                       "svi", "svb", "svmin", "svmax", "lvw", "lvh", "lvi", "lvb", "lvmin",
                       "lvmax", "dvw", "dvh", "dvi", "dvb", "dvmin", "dvmax", "cqw", "cqh", "cqi",
                       "cqb", "cqmin", "cqmax"})
"""Length units not relative to the parent's font size: one of them other than 0 shows."""
_RELATIVE = frozenset({"em", "%", "ex", "ch", "cap", "ic"})
"""Units of the parent's font size: 0 of a parent of 0."""
_NOT_FAMILY = frozenset({"inherit", "unset", "revert", "revert-layer", "initial", "default"})
_FONT_SIZE_WORDS = (_SIZE_SHOWN | _SIZE_INHERITED) - _GLOBAL
_FONT_SYSTEM = frozenset({"caption", "icon", "menu", "message-box", "small-caption",
                          "status-bar"})
_FONT_BEFORE_SIZE = frozenset({
    "normal", "italic", "oblique", "small-caps", "bold", "bolder", "lighter",
    "ultra-condensed", "extra-condensed", "condensed", "semi-condensed", "semi-expanded",
    "expanded", "extra-expanded", "ultra-expanded"})
_FONT_PART = re.compile(r""""(?:[^"\\]|\\.)*+"?|'(?:[^'\\]|\\.)*+'?|[,/]|[^\s,/"']++""")
_FAMILY_WORD = re.compile(r"-?(?:[a-zA-Z_]|[^\x00-\x7f])[\w-]*+")
_ANGLE = re.compile(rf"{_NUMBER}(?:deg|grad|rad|turn)", re.IGNORECASE)
_DISPLAYS = frozenset({
    "block", "inline", "run-in", "flow", "flow-root", "table", "flex", "grid", "ruby", "math",
    "list-item", "contents", "inline-block", "inline-table", "inline-flex", "inline-grid",
    "table-row-group", "table-header-group", "table-footer-group", "table-row", "table-cell",
    "table-column-group", "table-column", "table-caption", "ruby-base", "ruby-text",
    "ruby-base-container", "ruby-text-container", "-webkit-box", "-webkit-inline-box",
    "-moz-box", "-moz-inline-box", "-ms-flexbox", "-ms-inline-flexbox", "initial", "inherit",
    "unset"})
"""``display`` keywords (one to three make a value) that show the element and override the
``hidden`` attribute (not ``revert``: it falls back to the UA's ``[hidden]{display:none}``)."""
_INLINE_DISPLAYS = frozenset({"inline", "flow", "contents", "ruby", "ruby-base", "ruby-text",
                              "ruby-base-container", "ruby-text-container", "initial", "unset",
                              "inherit"})
"""``display`` keywords of a box ``content-visibility`` does not apply to (as shown)."""
_TABLE_DISPLAYS = frozenset({
    "table", "inline-table", "table-row-group", "table-header-group", "table-footer-group",
    "table-row", "table-cell", "table-column-group", "table-column", "table-caption"})
"""``display`` keywords of a table's boxes: no size containment, so ``content-visibility``
does not apply to them either (review mr8: ``hidden=until-found`` does not hide them)."""
_SIZE_RESETS = frozenset({"zoom", "transform", "scale", "-webkit-transform", "-moz-transform",
                          "-ms-transform", "text-size-adjust", "-webkit-text-size-adjust",
                          "-moz-text-size-adjust"})
"""Properties that may show text at a size of its own (counted so, in doubt)."""


@dataclass(frozen=True, slots=True)
class Style:
    """What a style sets: ``gone``, nothing it holds shows; ``visible`` and ``sized``, its
    visibility and whether its font may have a size (None: as its parent's); ``displayed``, a
    ``display`` that shows it (which overrides the ``hidden`` attribute); ``inline``, whether
    its ``display`` is an inline one (None: not set); ``unsure_until``, a style that may undo
    ``hidden="until-found"`` (``content-visibility``)."""

    gone: bool = False
    visible: bool | None = None
    sized: bool | None = None
    displayed: bool = False
    inline: bool | None = None
    unsure_until: bool = False

    @property
    def hides(self) -> bool:
        return self.gone or self.visible is False or self.sized is False


NO_STYLE = Style()


def _opacity(value: str) -> bool | None:
    """Whether an ``opacity`` hides (0 or less); None: no value a browser takes."""
    if "(" in value:
        return False  # calc(), var(): in doubt, shown
    amount = _AMOUNT.fullmatch(value)
    if amount and amount.group(2) in ("", "%"):
        return float(amount.group(1)) <= 0
    return False if value in _GLOBAL else None


def _size(number: str, unit: str) -> bool | str | None:
    """A font size of ``number`` ``unit``: False, 0; True, may show; "inherit", 0 of a parent
    of 0; None, none a browser takes (a negative one, an unknown unit)."""
    amount, unit = float(number), unit.lower()
    if amount < 0 or not (unit in _ABSOLUTE or unit in _RELATIVE or unit == ""):
        return None
    if amount == 0:
        return False
    return "inherit" if unit in _RELATIVE else True  # unitless: px in quirks mode


def _font_size(value: str) -> bool | str | None:
    """A ``font-size`` value as ``_size`` reads it."""
    if "(" in value:
        return True  # calc(), max(), var(): in doubt, a size of its own
    amount = _AMOUNT.fullmatch(value)
    if amount:
        return _size(amount.group(1), amount.group(2))
    return True if value in _SIZE_SHOWN else "inherit" if value in _SIZE_INHERITED else None


def _font(value: str) -> bool | str | None:
    """The size the ``font`` shorthand sets (``_font_size``), where it parses whole: up to four
    style, weight and width words, a size, a ``/line-height``, and a family list."""
    if value in _FONT_SYSTEM or "(" in value:
        return True
    if value in _GLOBAL:
        return _font_size(value)
    parts = _FONT_PART.findall(value)
    at = 0
    before = 0
    while at < len(parts) and before < 4 and (parts[at] in _FONT_BEFORE_SIZE or (
            parts[at].isascii() and parts[at].isdigit() and 1 <= int(parts[at]) <= 1000)):
        angle = parts[at] == "oblique" and at + 1 < len(parts) and _ANGLE.fullmatch(parts[at + 1])
        at += 2 if angle else 1
        before += 1
    if at >= len(parts):
        return None
    size_word = parts[at]
    amount = _AMOUNT.fullmatch(size_word)
    size = (_size(amount.group(1), amount.group(2)) if amount
            else _font_size(size_word) if size_word in _FONT_SIZE_WORDS else None)
    at += 1
    if at + 1 < len(parts) and parts[at] == "/":
        line_height = parts[at + 1]
        if not (line_height == "normal" or _AMOUNT.fullmatch(line_height)):
            return None
        at += 2
    return size if size is not None and _family(parts[at:]) else None


def _family(parts: list[str]) -> bool:
    """Whether ``parts`` are a font family list: names (a string, or words) apart by commas."""
    names: list[list[str]] = [[]]
    for part in parts:
        if part == ",":
            names.append([])
        else:
            names[-1].append(part)
    return all(len(name) == 1 and name[0][0] in "\"'" or name and all(
        _FAMILY_WORD.fullmatch(word) and word not in _NOT_FAMILY for word in name)
        for name in names)


def declarations(style: str) -> list[str]:
    """``style`` split into its declarations, as CSS splits them: a ``;`` inside a string, an
    escape, ``url()`` or brackets ends none; comments read as a space."""
    found: list[str] = []
    current: list[str] = []
    depth = 0
    for piece in _PIECE.findall(style):
        if piece == ";" and depth == 0:
            found.append("".join(current))
            current = []
            continue
        if piece in ("(", "[", "{"):
            depth += 1
        elif piece in (")", "]", "}"):
            depth = max(depth - 1, 0)
        current.append(" " if piece.startswith("/*") else piece)
    found.append("".join(current))
    return found


CACHED_CHARS = 256
"""The longest style whose reading is kept (``_cached``): a page repeats its few styles."""


def style_of(style: str) -> Style:
    """What the declarations of a ``style`` attribute's value set (module docstring)."""
    return _cached(style) if len(style) <= CACHED_CHARS else _read(style)


_Read = bool | str | None
"""A declaration's value as read: what it sets (None: no value a browser takes)."""


def _value(name: str, value: str) -> _Read:
    """A declaration of one of ``_PROPERTIES`` read: ``display`` "none", "revert", "inline",
    "contents" (no box: an ``opacity`` does nothing; review mr8) or "shown"; ``visibility`` shown or not, or "inherit"; ``opacity`` whether it hides; a font
    size whether it may show, or "inherit" (0 of a parent of 0)."""
    if name == "display":
        if "(" in value:
            return "contents"  # var(): in doubt, shown, and maybe no box for an opacity
        words = value.split()
        if value == "none":
            return "none"
        if value in ("revert", "revert-layer"):
            return "revert"
        if not (0 < len(words) <= 3 and all(w in _DISPLAYS for w in words)):
            return None
        if words == ["contents"]:
            return "contents"
        return "inline" if all(w in _INLINE_DISPLAYS for w in words) or any(
            w in _TABLE_DISPLAYS for w in words) else "shown"
    if name == "visibility":
        if "(" in value:
            return True
        return ({"hidden": False, "collapse": False, "visible": True, "initial": True,
                 "revert": True, "revert-layer": True}
                .get(value, "inherit" if value in _GLOBAL else None))
    if name == "opacity":
        return _opacity(value)
    if name in _SIZE_RESETS or name == "content-visibility":
        return True
    return (_font_size if name == "font-size" else _font)(value)


_PROPERTIES = {"display": "display", "visibility": "visibility", "opacity": "opacity",
               "font-size": "font-size", "font": "font-size",
               "content-visibility": "content-visibility",
               **{name: "reset" for name in _SIZE_RESETS}}
"""The properties read, to the one each sets (the ``font`` shorthand sets the size)."""
_NAME = re.compile(r"\s*+([a-zA-Z-]++)\s*+")


def _read(style: str) -> Style:
    taken: dict[str, tuple[_Read, bool]] = {}
    for declaration in declarations(style):
        name_part, colon, value = declaration.partition(":")
        name = _NAME.fullmatch(name_part)
        if not colon or not name or name.group(1).lower() not in _PROPERTIES:
            continue
        important = "!" in value and bool(_IMPORTANT.search(value))
        read = _value(name.group(1).lower(),
                      (_IMPORTANT.sub("", value) if important else value).strip().lower())
        sets = _PROPERTIES[name.group(1).lower()]
        if read is not None and (sets not in taken or important or not taken[sets][1]):
            taken[sets] = (read, important)
    if not taken:
        return NO_STYLE
    display, visibility, opacity, size, reset, until = (taken.get(n, (None, False))[0] for n in (
        "display", "visibility", "opacity", "font-size", "reset", "content-visibility"))
    sized = size if isinstance(size, bool) else None
    if reset and size is not False:
        sized = True
    return Style(gone=display == "none" or (opacity is True and display != "contents"),
                 visible=visibility if isinstance(visibility, bool) else None,
                 sized=sized,
                 displayed=display in ("inline", "shown", "contents"),
                 inline=None if display not in ("inline", "shown", "contents")
                 else display != "shown",
                 unsure_until=until is not None)


_cached = functools.lru_cache(maxsize=1024)(_read)
