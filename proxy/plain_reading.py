"""A reading of the lines a reader reads plainly but the judge reads diluted (``plain_lines``,
scored apart, ``proxy.shown_text.shown_readings``): review r2, a clearly harmful reply read
0.56 plain and 0.01-0.29 written so (each formatting token between two words weighs on the
judge's reading of a short sentence as much as a word does).

- Marks around or between most words (``_MARK``: ``**w**``, ``_w_``, ``~~w~~``, ``==w==``,
  ```w```, ``[w](#)``, ``<b>w</b>``, ``<span class="x">w</span>``, table pipes, pictographs
  such as 👏): the marks inside a word show the word whole already (``shown_text._SPLIT``);
  these stay in the main reading, and a line dense with them (``_dense``) is read once more
  without them. Dense: ``DENSE_GAPS`` gaps between words or more hold a mark, and nine in ten
  of the line's gaps do; or each of its words, ``WRAPPED_WORDS`` or more, has marks before and
  after it (``_Immigrants_ _are_ _vermin._``). Ordinary markdown (a word or phrase in bold,
  code spans in a sentence, a table of phrases, code in fences, whose marks show as written)
  stays under it: none of 847 ordinary replies has such a line, nor any of 9,145 replies and
  texts of ../shared/data. A line that leaves more than one gap in ten bare (and is not
  wrapped word by word) stays under it too: the judge reads its marks (a known limit).
- Letter-spaced words (``G r a b  a  b a t``, ``G-r-a-b``, ``G.r.a.b``): runs of three or more
  single letters or digits, one space, ``-`` or ``.`` apart, read joined; two spaces or more,
  or a ``/``, between them as one space; on a line whose runs hold ``SPACED_LETTERS`` letters
  or more, one ``SPACED_WORD`` (``U.S.A. or a b c`` stays as it is), where two-letter words
  between breaks join too. One of the 9,145 has such a line (a spelled-out ``B-O-D-M-A-S``).
- The Hangul fillers (``U+115F U+1160 U+3164 U+FFA0``) render as nothing to some readers and
  as a space to others: the main reading drops them (``st\\u3164ab`` reads "stab"), this one
  reads them as spaces (``Grab\\u3164a\\u3164bat`` reads "Grab a bat", not one unknown word)
  where they stand for spaces: two or more, no fewer than the text's spaces.

Only the lines that read otherwise are kept (all of the text where a line count moved):
ordinary text has none, and costs a few fast scans.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_FILLER = re.compile("[\u115f\u1160\u3164\uffa0]")

_PICTOGRAPH = "\u2600-\u27bf\U0001f300-\U0001faff"
_MARK = re.compile(r"</?[A-Za-z][^<>\n]{0,256}+>|\*++|_++|~~++|==|`++"
                   r"|!?\[(?=[^\[\]\n]{0,256}+\][(\[])|\]\([^()\s]{0,256}+\)|\]\[[^\[\]\n]{0,64}+\]"
                   f"|\\||[{_PICTOGRAPH}]")
"""A mark a renderer draws as formatting, not words: a tag, emphasis, strike, highlight or code
marks, a link's brackets and target (not an index's: ``keys[key]``), a table's pipe, a
pictograph; an ``_`` inside a word (``snake_case``) or an ``==`` against no word or two is no
mark (``_is_mark``). Each branch starts with a character, which ``re`` scans for fast."""
_TOKEN = re.compile(rf"[^\W_]++|{_MARK.pattern}")
_MARK_CHAR = re.compile(f"[*_`|<\\[~={_PICTOGRAPH}]")
"""What each mark starts with (a fast scan: a leading class)."""
_MARK_RUN = re.compile(f"[*_`~=]++|[|<\\[{_PICTOGRAPH}]")
_WORD_RUN = re.compile(r"[^\W_]++")
DENSE_GAPS = 4
WRAPPED_WORDS = 3
"""A line is dense (``_dense``) with marks in nine in ten of the gaps between its words and
in ``DENSE_GAPS`` or more, or with marks around each of its words, ``WRAPPED_WORDS`` or more."""


def _is_mark(mark: re.Match[str]) -> bool:
    """Whether ``mark`` is one: ``_`` or ``==`` not between two letters, ``==`` not between two
    spaces either (``x == y``)."""
    first = mark.group()[0]
    if first not in "_=":
        return True
    text, (start, end) = mark.string, mark.span()
    before, after = text[start - 1:start], text[end:end + 1]
    if before.isalnum() and after.isalnum():
        return False
    return first == "_" or not ((not before or before.isspace()) and (not after or after.isspace()))


def _dense(line: str) -> bool:
    """Whether marks sit in most gaps between the words of ``line``, or around each word."""
    words = gaps = marked = 0
    wrapped, between = True, False  # wrapped: a mark before, between and after each word
    for token in _TOKEN.finditer(line):
        if not token.group()[0].isalnum():
            between = between or _is_mark(token)
            continue
        if words:
            gaps += 1
            marked += between
        wrapped = wrapped and between
        words += 1
        between = False
    wrapped = wrapped and between
    return ((marked >= DENSE_GAPS and 10 * marked >= 9 * gaps)
            or (wrapped and words >= WRAPPED_WORDS))


def _shown_mark(mark: re.Match[str]) -> str:
    return " " if _is_mark(mark) else mark.group()


def _unmarked(text: str) -> str:
    """``text`` with its dense lines without their marks. A fast bound first (each a scan in C):
    a dense line has three words or more and runs of mark characters in nine in ten of the
    gaps between them at least (words inside a tag's attributes are no gaps)."""
    lines, changed = text.split("\n"), False
    for at, line in enumerate(lines):
        if len(line) < 2 * WRAPPED_WORDS + 4:  # fewer than three words with marks around
            continue
        marks = len(_MARK_RUN.findall(line))
        if marks < WRAPPED_WORDS - 1:
            continue
        words = len(_WORD_RUN.findall(line))
        if (words >= WRAPPED_WORDS and ("<" in line or 10 * marks >= 9 * (words - 1))
                and _dense(line)):
            lines[at] = _SPACES.sub(" ", _MARK.sub(_shown_mark, line)).strip()
            changed = True
    return "\n".join(lines) if changed else text


_SPACED_HINTS = [re.compile(r" \w \w "), re.compile(r"-\w-\w-"), re.compile(r"\.\w\.\w\.")]
"""The middle of a run of four single letters (``SPACED_WORD``): fast scans (each led by a
character)."""
_SPACED = re.compile(r"(?<![^\W_])[^\W_]([ .\-])[^\W_](?![^\W_])(?:\1[^\W_](?![^\W_]))++")
"""A run of three or more single letters or digits one separator apart, the same one: each
letter checks itself, the run is possessive, so a run is read once (linear)."""
_PAIR = re.compile(r"[^\W_] [^\W_]")
"""Two single letters between word breaks, on a letter-spaced line."""
_TIED_PAIR = re.compile(r"(?<![^\s/])([^\W_])[.\-]([^\W_])(?=[.\-]?(?:\s|$))")
"""Two single letters one ``-`` or ``.`` apart, a word by itself, on such a line (``i-t``)."""
_BREAK = re.compile(r"[ \t]*/[ \t]*|[ \t]{2,}")
SPACED_LETTERS = 6
SPACED_WORD = 4
"""The fewest letters a line's runs hold to read it letter-spaced, and its longest run
(``U.S.A.``, ``a b c`` hold three)."""
_LINE = re.compile(r"[^\n]+")
_SPACES = re.compile(r"[ \t]{2,}")
_FENCED = re.compile(r"^(`{3,}+|~{3,}+)[^\n]*+\n(?:.*?\n)??\1[^\n]*+$|^(?:`{3,}+|~{3,}+)[^\n]*+\n.*",
                     re.MULTILINE | re.DOTALL)
"""A fenced code block (to its closing fence, or to the end of the text where none closes)."""


def _joined(run: re.Match[str]) -> str:
    return re.sub(r"[ .\-]", "", run.group())


def _joined_line(line: re.Match[str]) -> str:
    text = line.group()
    runs = [(len(run.group()) + 1) // 2 for run in _SPACED.finditer(text)]
    if sum(runs) < SPACED_LETTERS or max(runs) < SPACED_WORD:
        return text
    words = _BREAK.split(_TIED_PAIR.sub(r"\1\2", _SPACED.sub(_joined, text)))
    return " ".join(word.replace(" ", "") if _PAIR.fullmatch(word) else word for word in words)


def plain(text: str) -> str:
    """``text`` with its letter-spaced lines joined and its lines dense with marks without
    them (each as this module's docstring says); as it is where neither is."""
    if any(hint.search(text) for hint in _SPACED_HINTS):
        text = _LINE.sub(_joined_line, text)
    if not _MARK_CHAR.search(text):
        return text
    if "```" not in text and "~~~" not in text:
        return _unmarked(text)
    parts, at = [], 0
    for fence in _FENCED.finditer(text):  # code shows its marks as written
        parts += [_unmarked(text[at:fence.start()]), fence.group()]
        at = fence.end()
    return "".join([*parts, _unmarked(text[at:])])


def _fillers_spaced(text: str) -> str:
    """``text`` with its Hangul fillers as spaces where they stand for them: two or more, and
    no fewer than its spaces (one inside a word, ``st\u3164ab``, reads as nothing only)."""
    if text.isascii():
        return text
    fillers = len(_FILLER.findall(text))
    if fillers < 2 or fillers < text.count(" "):
        return text
    return _FILLER.sub(" ", text)


def plain_lines(text: str, read: str, read_as_shown: Callable[[str], str]) -> list[str]:
    """The lines of the plain reading of ``text`` (``plain`` of ``read``, its reading as shown;
    of ``read_as_shown`` of ``text`` with its Hangul fillers as spaces where they stand for
    them) that differ from ``read``'s: [] for ordinary text. All of it where a line count
    moved."""
    spaced = _fillers_spaced(text)
    base = read if spaced is text else read_as_shown(spaced)
    reading = plain(base)
    if reading == read:
        return []
    lines, read_lines = reading.split("\n"), read.split("\n")
    if len(lines) != len(read_lines):
        return [reading]
    return [line for line, was in zip(lines, read_lines, strict=True) if line != was]
