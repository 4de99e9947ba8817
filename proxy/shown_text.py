"""A text as a client shows it, for the value judge: what renders as the same words is read as
those words (review rv2: a violent reply scoring 0.72 read as 0.02-0.18 written otherwise).

- Character references (``&#83;``, ``&#x53;``, ``&amp;``): every HTML and markdown renderer
  shows the character. Decoded once (``&amp;#83;`` shows as ``&#83;``), a named one only with
  its ``;`` (HTML reads ``&notice`` as "¬ice", no reader does).
- Compatibility letters: fullwidth, mathematical, circled, superscript letters and ligatures
  show as the ASCII letters NFKC maps them to (``_COMPAT``: only those that map to ASCII
  letters or digits, so CJK punctuation, "…", "½" or a no-break space read as they did).
- Markup inside a word (``_SPLIT``): an HTML tag without attributes or a comment without words
  (``S<!---->tab``, ``S<b></b>tab``), markdown emphasis or code marks (``**S**tab``,
  ``s~~t~~ab``, ```s`tab``) show the word whole; a block tag (``<br>``) shows a break and stays. Only
  where such marks sit between two parts of a word, with the marks around those parts: a
  word in bold or ``snake_case`` reads as before. A tag with attributes or a comment with words
  in a word shows one thing in a renderer (the word whole) and another where markup is shown
  as written (its words): the judge reads both (``also``, the lines that differ only).
- Look-alike letters (``_CONFUSABLE``): a word mixing ASCII letters with Cyrillic or Greek
  ones that look like Latin letters ("stаb", its "а" Cyrillic) is read in Latin letters; a
  word with no ASCII letter (Russian, Greek) reads as written.

Every pattern is linear on any input (possessive repeats; a word or a run of marks starts only
where none precedes; no body spans a ``<``): a megabyte of ``<!--`` reads in one pass. Only
what the judge reads changes, never what is relayed.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import partial

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


def _compat_table(ranges: Iterable[tuple[int, int]]) -> dict[int, str]:
    """Each character of ``ranges`` whose NFKC form is a few ASCII letters or digits, to that
    form; not the letterlike symbols (™ reads "TM" to no one) nor superscript or circled
    numbers (they hide no word, and "m²" read as "m2" moved a score by 0.04)."""
    table: dict[int, str] = {}
    for start, stop in ranges:
        for code in range(start, stop):
            char = chr(code)
            form = unicodedata.normalize("NFKC", char)
            category = unicodedata.category(char)
            if (form != char and form.isascii() and form.isalnum() and len(form) <= 3
                    and category != "No" and not (0x2100 <= code < 0x2150 and category == "So")):
                table[code] = form
    return table


_COMPAT_RANGES = [(0xA0, 0x300), (0x1D00, 0x1DC0), (0x2070, 0x2190), (0x2460, 0x2500),
                  (0xFB00, 0xFB07), (0xFF10, 0xFF5B), (0x1D400, 0x1D800), (0x1F100, 0x1F200)]
"""Superscripts and modifier letters, letterlike and Roman numerals, circled and squared
letters, ligatures, fullwidth and mathematical letters and digits."""
_COMPAT = _compat_table(_COMPAT_RANGES)
"""About a thousand characters, to their ASCII letters."""
_COMPAT_RUN = re.compile("[" + "".join(f"{chr(a)}-{chr(b - 1)}" for a, b in _COMPAT_RANGES)
                         + "]+")
"""A run of characters of ``_COMPAT_RANGES``: a class of ranges reads fast (one of the
thousand characters read a megabyte in 7 s), and only runs are translated."""
PIECE = 1 << 15
"""About how many characters one regex pass reads (``_in_pieces``): a worker thread reading a
large text lets the event loop run between passes (as ``proxy.judged_text.visible`` does)."""

_CONFUSABLE = str.maketrans(
    "аеорсухіјѕһԁӏԛԝвкмнтАВЕКМНОРСТХУІЈЅԚԜ"
    "αοριυχκτνΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijshdlqwbkmhtABEKMHOPCTXYIJSQW"
    "aopiuxktvABEZHIKMNOPTYX")
"""Cyrillic and Greek letters that show as a Latin letter (Unicode's confusables.txt, the
common ones; lower case in ``в``, ``к``, ``м``, ``н``, ``т`` as small capitals do)."""
_LOOK_ALIKES = "".join(chr(code) for code in _CONFUSABLE)
_LOOK_ALIKE = re.compile(f"[{_LOOK_ALIKES}]")
_MIXED = re.compile(rf"(?<![^\W_])(?=[^\W_]*[A-Za-z])(?=[^\W_]*[{_LOOK_ALIKES}])[^\W_]++")
"""A word (letters and digits) with an ASCII letter and a look-alike one."""

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


def _split_word(mark: str, edge: str) -> re.Pattern[str]:
    """A word split by ``mark`` runs, with the ``edge`` runs around it: it starts where no
    word character or mark ends (each run is tried once: linear)."""
    part = r"[^\W_]++"
    return re.compile(rf"(?<![\w*~`>])(?:{edge})*+{part}(?:(?:{mark})++{part})++(?:{edge})*+")


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


def _in_pieces(text: str, read: Callable[[str], str], cut: re.Pattern[str]) -> str:
    """``read`` of ``text`` a piece at a time: one regex pass holds the GIL to its end (0.6-1.8
    s a megabyte of markup, on the event loop even from a worker thread). Each piece ends at the
    first ``cut`` past ``PIECE`` characters; a piece with none (a line of 128 K characters with
    no space) is cut there all the same, which may read one overlong "word" at the cut as it
    is written."""
    if len(text) <= PIECE:
        return read(text)
    pieces, start = [], 0
    while len(text) - start > PIECE:
        found = cut.search(text, start + PIECE, start + 4 * PIECE)
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


def _references(text: str) -> str:
    if "&" not in text:
        return text
    decoded = _in_pieces(text, _decoded, _SPACE_CUT)
    return _hidden_gone(decoded) if decoded != text else text


def _compat_read(text: str) -> str:
    return _COMPAT_RUN.sub(lambda run: run.group().translate(_COMPAT), text)


def _compat(text: str) -> str:
    return text if text.isascii() else _in_pieces(text, _compat_read, _ANY_CUT)


def _latin_read(text: str) -> str:
    return _MIXED.sub(lambda word: word.group().translate(_CONFUSABLE), text)


def _latin(text: str) -> str:
    if text.isascii() or not _LOOK_ALIKE.search(text):  # a fast scan: most text has none
        return text
    return _in_pieces(text, _latin_read, _SPACE_CUT)


def shown(text: str) -> tuple[str, list[str]]:
    """``text`` as a renderer shows it (identical for ordinary text), and the lines of it that
    read other words where markup is shown as written (``_WORDED_MARK`` in a word; mostly
    none)."""
    text = _latin(_compat(_references(_hidden_gone(text))))
    if not any(mark in text for mark in "<*~`"):
        return text, []
    text = _in_pieces(text, partial(_SPLIT.sub, _unmarked), _SPACE_CUT)
    if not any(_after_word(text, tag.start()) for tag in _TAG_START.finditer(text)):
        return text, []
    worded = _in_pieces(text, partial(_SPLIT_WORDED.sub, _unmarked), _LINE_CUT)
    if worded == text:
        return text, []
    lines, shown_lines = text.split("\n"), worded.split("\n")
    if len(lines) != len(shown_lines):  # a comment across lines went: read all as written
        return worded, [text]
    return worded, [line for line, kept in zip(lines, shown_lines) if line != kept]
