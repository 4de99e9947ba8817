"""A text as a client shows it, for the value judge: what renders as the same words is read as
those words (review rv2: a violent reply scoring 0.72 read as 0.02-0.18 written otherwise).

- Character references (``&#83;``, ``&#x53;``, ``&amp;``): every HTML and markdown renderer
  shows the character. Decoded once (``&amp;#83;`` shows as ``&#83;``), a named one only with
  its ``;`` (HTML reads ``&notice`` as "¬ice", no reader does). Tag characters so written
  (``&#917577;``) are read as the ASCII they mirror, as raw ones are (``tag_reading``).
- Letters that show as ASCII letters (``proxy.letter_forms``): compatibility forms NFKC maps
  (fullwidth, mathematical, circled), small capitals and negative circled or squared
  capitals by their names, and Cyrillic or Greek look-alikes on a line that reads as Latin.
- A markdown link or image inside a word (``_LINK``: ``W[ait](#)``, ``W[ait for h](#)im``,
  ``s[](#)lash``, ``s![](x)lash``) shows as its text (an image as nothing): the word reads
  whole; one whose target or alt text holds a word is read as written too (``also``).
- An element a renderer hides (``proxy.hidden_elements``: ``style="display:none"``,
  ``opacity:0``, ``visibility:hidden``, ``font-size:0``, the ``hidden`` attribute) shows
  nothing of what it holds but the descendants that show again; its lines are read as
  written too (``also``), their letters as they show.
- Digits read as letters (``letter_forms.digits_read``) in the reading as joined, once links
  and marks inside words show as their text (``W[4it](#)``, ``**W**4it``), and in each line
  read as written.
- Markup inside a word (``_SPLIT``): an HTML tag without attributes or a comment without words
  (``S<!---->tab``, ``S<b></b>tab``), markdown emphasis or code marks (``**S**tab``,
  ``s~~t~~ab``, ```s`tab``) show the word whole; a block tag (``<br>``) shows a break and stays. Only
  where such marks sit between two parts of a word, with the marks around those parts: a
  word in bold or ``snake_case`` reads as before. A tag with attributes or a comment with words
  in a word shows one thing in a renderer (the word whole) and another where markup is shown
  as written (its words): the judge reads both (``also``, the lines that differ only).

Every pattern is linear on any input (possessive repeats; a word or a run of marks starts only
where none precedes; no body spans a ``<``): a megabyte of ``<!--`` reads in one pass. Only
what the judge reads changes, never what is relayed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from functools import partial

from proxy.hidden_elements import without_hidden
from proxy.letter_forms import LOOK_ALIKE, compat_read, digits_read, latin_read
from proxy.plain_reading import plain_lines
from proxy.shown_symbols import symbols_read

_HIDDEN_CLASS = ("\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                 "\u2060-\u2065\u206a-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
                 "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff")
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
IGNORABLE = _HIDDEN_CLASS + BIDI_CONTROLS
"""Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15), as a
character class's body: what a renderer shows as nothing."""
_HIDDEN = re.compile(f"[{_HIDDEN_CLASS}]")
"""What renders as nothing but a bidi control (read as shown later,
``proxy.judged_text._displayed``): a zero-width space between ``**`` and a word's letters
must not keep the marks in the judge's reading."""
_REFERENCE = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)")
"""A character reference as HTML decodes it in text (a named one with its ``;`` only)."""


_TAGS = re.compile("[\U000e0020-\U000e007e]+")
"""Unicode tag characters that mirror printable ASCII (U+E0020-E007E): ignorable, so a reader
sees nothing, but a model reads them as their ASCII ("ASCII smuggling"): ``tag_reading``."""
_TAG_ASCII = {0xE0000 + code: code for code in range(0x20, 0x7F)}
PIECE = 1 << 15
"""About how many characters one regex pass reads (``_in_pieces``): a worker thread reading a
large text lets the event loop run between passes (as ``proxy.judged_text.visible`` does)."""

_LINK = re.compile(r"(!?)\[([^\[\]\n]*+)\](?:\(\s*+(?:<([^<>\n]*+)>|([^()\s<>\[\]]*+))"
                   r"(?:\s++(\"[^\"\n]*+\"|'[^'\n]*+'|\([^()\n]*+\)))?\s*+\)|\[([^\[\]\n]*+)\])")
"""A markdown link or image on one line (``[ait](#)``, ``[ait for](#)``, ``![](x)``, with a
title ``[ait](# "t")``, an angle target ``[ait](<#>)``, or a reference ``[ait][1]``): inside a
word it shows as its text (an image as nothing), which the word's letters join: spaces in it
too (``W[ait for h](#)im`` shows "Wait for him": read as written, 0.71 on mft.care read 0.21).
Starts only at a ``[`` and each part stops at the next bracket: linear."""

_WORD = re.compile(r"[^\W\d_]{3}")
"""A word in a link's target or an image's alt text: a reading where markdown shows as written
(a letter or two is no word: ``(#a)``, ``(x)``)."""

_BLOCK_TAGS = frozenset({"br", "p", "div", "li", "ul", "ol", "hr", "tr", "td", "th", "table",
                         "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dd", "dt",
                         "dl", "section", "article", "header", "footer", "img"})
"""Tags that show as a break between the parts they separate: kept (the judge's tokenizer
reads ``one<br>two`` as two words already)."""
_BARE_MARK = (r"[*~`]++|<!--[^<>\w]*?-->|</?[A-Za-z][A-Za-z0-9]{0,15}+\s*+/?>")
"""What shows as nothing inside a word, and carries no words of its own."""
_WORDED_MARK = r"<!--[^<>\n]*?-->|</?[A-Za-z][^<>\n]*+>"
"""A comment or a tag that carries words (attributes): hidden by a renderer, shown as text
where markup is shown as written."""


LEADING_EDGES = 8
"""The most ``edge`` runs before a split word that go with it: a start after a ``>`` (a
quote's, an arrow's, but also ``-->`` and ``<b >``) inside a run of edges with no word after
them read the rest of the run again (review rv5: ``<b >`` written 4,600 times took 9.6 s,
quadratic), so each start reads a few at most."""


_STOPS = r"[.,;:!?'\")\]]"
"""Punctuation between a split word and the edges that close it (``Su<i>re.</i>``): the
closing tag after it shows as nothing too (with the judge's second cm refit, the stray
``</i>`` left after each word's full stop read a diluted attack at 0.47 for 0.71 plain)."""


def _split_word(mark: str, edge: str) -> re.Pattern[str]:
    """A word split by ``mark`` runs, with the ``edge`` runs around it (``LEADING_EDGES``
    before it at most; after it, each behind at most three ``_STOPS``): it starts where no
    word character or mark ends (each run is tried once: linear), or after a ``>`` that ends
    no tag (a quote's, an arrow's)."""
    part = r"[^\W_]++"
    start = r"(?:(?<![\w*~`>])|(?<=>)(?<![^\s=-]>))"
    return re.compile(rf"{start}(?:{edge}){{0,{LEADING_EDGES}}}+{part}(?:(?:{mark})++{part})++"
                      rf"(?:{_STOPS}{{0,3}}+(?:{edge}))*+")


_SPLIT = _split_word(_BARE_MARK, rf"{_BARE_MARK}|_++")
_SPLIT_WORDED = _split_word(rf"{_BARE_MARK}|{_WORDED_MARK}",
                            rf"{_BARE_MARK}|{_WORDED_MARK}|_++")
_MARK = re.compile(rf"{_WORDED_MARK}|{_BARE_MARK}|_++")
_TAG_START = re.compile(r"<[!/A-Za-z]")
"""Where a tag or a comment may start: a literal, which ``re`` scans for fast."""
_TAG_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)")


def _unmarked(match: re.Match[str]) -> str:
    """A split word as it shows: its marks gone but its block tags."""
    return _MARK.sub(_shown_mark, match.group())


def _shown_mark(mark: re.Match[str]) -> str:
    name = _TAG_NAME.match(mark.group())
    return mark.group() if name and name.group(1).lower() in _BLOCK_TAGS else ""


_ANY_CUT = re.compile(r"(?s:.)")
_SPACE_CUT = re.compile(r"\s(?=[^\W_])")
"""Where no reference, no mixed word and no split word with bare marks spans: a space before a
word's letter (a bare tag or comment holds no letter past a space)."""
_LINE_CUT = re.compile(r"\n(?=[^\W_])")
"""Where no split word with worded marks spans either (their bodies hold no line end)."""
_LETTER_CUT = re.compile(r"(?<=[^\w&#<>*~`/\\\[\]()!.:=?])(?=[^\W_])")
"""Where a text with no ``cut`` in a piece is cut: before a word's first letter, after no
character a reference, a tag, a mark or a link holds there."""


def _in_pieces(text: str, read: Callable[[str], str], cut: re.Pattern[str]) -> str:
    """``read`` of ``text`` a piece at a time: one regex pass holds the GIL to its end (0.6-1.8
    s a megabyte of markup, on the event loop even from a worker thread). Each piece ends at the
    first ``cut`` past ``PIECE`` characters; a piece with none (a line of 128 K characters with
    no space) before a word's letter (``_LETTER_CUT``), and one with neither there all the
    same, which may read one overlong "word" at the cut as it is written."""
    if len(text) <= PIECE:
        return read(text)
    pieces, start = [], 0
    while len(text) - start > PIECE:
        found = (cut.search(text, start + PIECE, start + 4 * PIECE)
                 or _LETTER_CUT.search(text, start + PIECE, start + 4 * PIECE))
        end = found.end() if found else start + 4 * PIECE
        pieces.append(read(text[start:end]))
        start = end
    return "".join([*pieces, read(text[start:])])


def _after_word(text: str, at: int) -> bool:
    """Whether a tag at ``at`` follows a letter, a digit or a mark: where a split word with a
    worded mark may be (a fast filter before that pass, which costs a regex step a
    character)."""
    return at > 0 and (text[at - 1].isalnum() or text[at - 1] in "*~`>_")


def _hidden_gone(text: str) -> str:
    return text if text.isascii() else _in_pieces(text, partial(_HIDDEN.sub, ""), _ANY_CUT)


def _decoded(text: str) -> str:
    return _REFERENCE.sub(lambda ref: html.unescape(ref.group()), text)


def tag_reading(text: str) -> str:
    """What the tag characters of ``text`` spell (``_TAGS`` as their ASCII, in order, runs
    joined), "" without any: a reading of its own, since what renders as nothing is dropped
    (a sentence hidden in tags reached the model while the judge read only the visible one)."""
    if text.isascii():
        return ""
    runs = (run for at in range(0, len(text), PIECE)
            for run in _TAGS.findall(text, at, at + PIECE))
    return "".join(runs).translate(_TAG_ASCII)


def _references(text: str) -> tuple[str, list[str]]:
    """``text`` with its references decoded, and what tag characters written as references
    spell (``&#917577;``), before they go with what renders as nothing (review rv4)."""
    if "&" not in text:
        return text, []
    decoded = _in_pieces(text, _decoded, _SPACE_CUT)
    if decoded == text:
        return text, []
    tags = tag_reading(decoded)
    return _hidden_gone(decoded), [tags] if tags else []


def _link_shown(text: str, written: list[bool], link: re.Match[str]) -> str:
    """A link or image inside a word as it shows (its text, or nothing); ``written`` notes one
    whose target or alt text holds a word (shown where markdown is shown as written)."""
    start, end = link.span()
    if not ((start and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum())):
        return link.group()
    image, words, *target = link.groups()
    if _WORD.search(" ".join([*filter(None, target), words if image else ""])):
        written.append(True)
    return "" if image else words


def _links_read(written: list[bool], text: str) -> str:
    return _LINK.sub(partial(_link_shown, text, written), text)


def _links(text: str) -> tuple[str, list[str]]:
    """``text`` with its links and images inside words as they show, and its lines that differ
    where one has a target or alt text with a word (read both ways, as a worded tag)."""
    if "](" not in text and "][" not in text:
        return text, []
    written: list[bool] = []
    read = _in_pieces(text, partial(_links_read, written), _LINE_CUT)
    return read, _lines_read_otherwise(text, read) if written else []


def _unhidden(text: str) -> tuple[str, list[str]]:
    """``text`` without the elements a renderer hides (``proxy.hidden_elements``) outside code
    (review mr4: ``<style>`` in a fenced block or a code span shows as written), and its lines
    that differ (shown as written where markup is: read both ways, as a worded tag is)."""
    read = without_hidden(text)
    if read == text:
        return text, []
    return read, _lines_read_otherwise(text, read)


def _compat(text: str) -> str:
    return text if text.isascii() else _in_pieces(text, compat_read, _ANY_CUT)


def _digits(text: str) -> str:
    return _in_pieces(text, digits_read, _SPACE_CUT)


def _latin(text: str) -> str:
    if text.isascii() or not LOOK_ALIKE.search(text):  # a fast scan: most text has none
        return text
    return _in_pieces(text, latin_read, _SPACE_CUT)


def shown(text: str) -> tuple[str, list[str]]:
    """``text`` as a renderer shows it (identical for ordinary text), and the lines of it that
    read other words where markup is shown as written (``_WORDED_MARK`` in a word; mostly
    none), then what tag characters written as references spell."""
    read, written, tags = shown_readings(text)
    return read, [*written, *tags]


def shown_readings(text: str) -> tuple[str, list[str], list[str]]:
    """``shown``'s readings apart: ``text`` as a renderer shows it, its lines as written where
    they read other words (and as read plainly, ``proxy.plain_reading``: letter-spaced, dense
    with marks around words, Hangul fillers as spaces), and what its tag characters written as
    references spell. Enclosing marks, lone regional indicators and braille blanks read as a
    reader reads them first (``proxy.shown_symbols``)."""
    text = symbols_read(text)
    read, written, tags = _readings(text)
    plain = plain_lines(text, read, lambda spaced: _readings(spaced)[0])
    return read, [*written, *map(_digits, plain)], tags


def _readings(text: str) -> tuple[str, list[str], list[str]]:
    text, tags = _references(_hidden_gone(text))
    text, hidden = _unhidden(text)
    text, linked = _links(_letters(text))
    read, also = _marks_shown(text)
    written = [_digits(line) for line in [*map(_letters, hidden), *linked, *also]]
    return _digits(read), written, tags


def _letters(text: str) -> str:
    """``text`` with the letters that show as ASCII ones in those (``proxy.letter_forms``):
    the lines read as written too (review rv5: a hidden element's line was read raw, so
    fullwidth letters in it read as nothing the judge knows, 0.03 for 0.55)."""
    return _latin(_compat(text))


def _marks_shown(text: str) -> tuple[str, list[str]]:
    """``text`` with the marks inside its words as they show, and its lines that read other
    words where markup is shown as written."""
    if not any(mark in text for mark in "<*~`"):
        return text, []
    text = _in_pieces(text, partial(_SPLIT.sub, _unmarked), _SPACE_CUT)
    if not any(_after_word(text, tag.start()) for tag in _TAG_START.finditer(text)):
        return text, []
    worded = _in_pieces(text, partial(_SPLIT_WORDED.sub, _unmarked), _LINE_CUT)
    return (text, []) if worded == text else (worded, _lines_read_otherwise(text, worded))


def _lines_read_otherwise(text: str, read: str) -> list[str]:
    """The lines of ``text`` that ``read`` (its reading as shown) reads otherwise: kept as
    written, an extra reading. All of ``text`` when a line end went with what was read (a
    comment, a hidden element or a link across lines): then no line pairs with its reading
    (review: a link across lines paired each line with the next one's reading and dropped the
    last)."""
    lines, shown_lines = text.split("\n"), read.split("\n")
    if len(lines) != len(shown_lines):
        return [text]
    return [line for line, kept in zip(lines, shown_lines, strict=True) if line != kept]
