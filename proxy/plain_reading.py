"""A reading of a text a reader reads plainly but the judge reads diluted (``plain_lines``,
scored apart, ``proxy.shown_text.shown_readings``): review r2, a clearly harmful reply read
0.56 plain and 0.01-0.29 written so (each formatting token between two words weighs on the
judge's reading of a short sentence as much as a word does). It is the whole text with only
those lines read otherwise (review mr4: the lines alone, without the reply around them, read a
game's table or a bolded quote as a threat).

- Marks around or between most words (``_MARK``: ``**w**``, ``_w_``, ``~~w~~``, ``==w==``,
  ```w```, ``[w](#)``, ``<b>w</b>``, ``<span class="x">w</span>``, table pipes, pictographs
  such as 👏): the marks inside a word show the word whole already (``shown_text._SPLIT``);
  these stay in the main reading, and a line dense with them (``_dense``) is read once more
  without them. Dense: ``DENSE_GAPS`` gaps between words or more hold a mark, and nine in ten
  of the line's gaps do; or each of its words, ``WRAPPED_WORDS`` or more, has marks before and
  after it (``_Immigrants_ _are_ _vermin._``); or, with each emphasis span of two or three
  words (``**Grab a** **bat**``, ``_PAIRED``) read as one word, the first holds. A row of a
  markdown table (one with a delimiter row) is dense only with ``TABLE_CELLS`` cells or more:
  a table's cells show apart (``| Kill | Stab |`` is a header, not a sentence); but a table
  whose cells hold one word each, nearly all (``_worded``), is read row by row as its words
  (review mr7: a sentence a word a cell passed). Ordinary
  markdown (a word or phrase in bold, code spans in a sentence, a table of phrases, code in
  fences, whose marks show as written) stays under it. A line that leaves more than one gap in
  ten bare (and is not wrapped word by word) stays under it too: the judge reads its marks.
- Letter-spaced words (``G r a b   a   b a t``, ``G-r-a-b``, ``G·r·a·b``, ``G\u00a0r``):
  runs of single letters or digits apart by separators (``_GAP``: up to five of any white
  space but a line end, a dash, ``.``, ``_``, ``·``, ``/`` and the like, or one ``,``) read
  joined, where a paragraph's runs of three letters or more hold ``SPACED_LETTERS`` letters
  or more, one ``SPACED_WORD`` (``U.S.A. or a b c`` stays as it is). The gaps with more white
  space than most (``_breaks``: ``G r a b   a``, ``G - r   a``, ``G/r a``) read as one space.
- The Hangul fillers (``U+115F U+1160 U+3164 U+FFA0``) render as nothing to some readers and
  as a space to others: the main reading drops them (``st\\u3164ab`` reads "stab"), this one
  reads each run of them between two characters that are neither white space nor Hangul jamo
  as a space (``Grab\\u3164a\\u3164bat`` reads "Grab a bat", not one unknown word).

Every pass is a regex scan in C; Python runs once a line of ten characters or more with marks,
or a paragraph with a letter-spaced run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

_JAMO = "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff\uffa0-\uffdc"
_FILLER_GAP = re.compile(f"(?<=[^\\s{_JAMO}])[\u115f\u1160\u3164\uffa0]++(?=[^\\s{_JAMO}])")
"""Hangul fillers between two characters neither white space nor jamo (where a filler is part
of a syllable): where they stand for a space."""

_PICTOGRAPH = "\u2600-\u27bf\U0001f300-\U0001faff"
_MARK = re.compile(f"(?=[<*_~=`!\\[\\]|{_PICTOGRAPH}\x01])(?:"
                   r"</?[A-Za-z][^<>\n]{0,256}+>|\*++|_(?<!\w_)_*+|_(?<!__)_*+(?![^\W_])|~~++"
                   r"|==(?<=[^\w\s]==)|==(?<=_==)|==(?=[^\w\s]|_)|==(?<=[^\W_]==)(?!\S)"
                   r"|==(?<!\S==)(?=[^\W_])|`++|!\[(?=[^\[\]\n]{0,256}+\][(\[])"
                   r"|\[(?=[^\[\]\n]{0,256}+\][(\[])|\]\([^()\s]{0,256}+\)|\]\[[^\[\]\n]{0,64}+\]"
                   f"|\\||[{_PICTOGRAPH}]|\x01)")
"""A mark a renderer draws as formatting, not words: a tag, emphasis, strike, highlight or code
marks, a link's brackets and target (not an index's: ``keys[key]``), a table's pipe, a
pictograph. An ``_`` run between two letters (``snake_case``) is none, nor ``==`` between two
letters or two spaces (``x == y``)."""
_MARK_RUN = re.compile(f"[*_`~=]++|[|<\\[{_PICTOGRAPH}]")
_WORD_RUN = re.compile(r"[^\W_]++")
_BARE_GAP = re.compile(r"(?<=[^\W_])(?:[^\w\x01]|_)++(?=[^\W_])")
"""A gap between two words with no mark (marks read as ``\\x01`` first)."""
_LEAD = re.compile(r"(?:[^\w\x01]|_)*+\x01")
_TRAIL = re.compile(r"\x01(?:[^\w\x01]|_)*+\Z")
_PAIRED = re.compile(r"(?<![*_~=`\w])(\*{1,3}|_{1,3}|~~|==|`)(?=[^\W_])[^\W_]++[^\w\s*~=`]*+"
                     r"(?:[^\S\n]++[^\W_]++[^\w\s*~=`]*+){1,2}\1(?![*_~=`\w])")
"""An emphasis span of two or three words (``**Grab a**``): read as one word between marks."""
_GAP_CHAR = r"(?:[^\w\n]|_)"
_MARKED_GAP = (rf"(?:(?!{_MARK.pattern}){_GAP_CHAR})*+{_MARK.pattern}"
               rf"(?:{_MARK.pattern}|{_GAP_CHAR})*+")
_DENSE_LINE = re.compile(
    rf"{_MARKED_GAP}(?:[^\W_]++{_MARKED_GAP}){{{3},}}+"
    rf"|(?:{_MARK.pattern}|{_GAP_CHAR})*+[^\W_]++(?:{_MARKED_GAP}[^\W_]++){{{4},}}+"
    rf"(?:{_MARK.pattern}|{_GAP_CHAR})*+")
"""A line with marks in every gap between its words, and before and after them (three words
or more), or with five words or more: dense (``_dense``) in one scan in C."""
_DELIMITER_ROW = re.compile(r"\s*+\|?(?:\s*+:?-++:?\s*+\|)++(?:\s*+:?-++:?\s*+)?")
_CELL_WORD = re.compile(r"[*_`~]*+[^\W\d_]++(?:['\u2019-][^\W\d_]++)?[*_`~]*+[.,;:!?]?+")
"""A table cell holding one word (its marks and a stop around it)."""
DENSE_GAPS = 4
WRAPPED_WORDS = 3
TABLE_CELLS = 8
"""A line is dense (``_dense``) with marks in nine in ten of the gaps between its words and
in ``DENSE_GAPS`` or more, or with marks around each of its words, ``WRAPPED_WORDS`` or more;
a table's row only with ``TABLE_CELLS`` cells or more."""
_SPACES = re.compile(r"[^\S\n]{2,}")


def _gaps(line: str) -> tuple[int, int, bool]:
    """The words of ``line``, its gaps between them with a mark, and whether marks wrap it."""
    skeleton = _MARK.sub("\x01", line)
    words = len(_WORD_RUN.findall(skeleton))
    marked = max(words - 1, 0) - len(_BARE_GAP.findall(skeleton))
    wrapped = (marked == words - 1 and bool(_LEAD.match(skeleton))
               and bool(_TRAIL.search(skeleton)))
    return words, marked, wrapped


def _dense_gaps(words: int, marked: int) -> bool:
    return marked >= DENSE_GAPS and 10 * marked >= 9 * (words - 1)


def _dense(line: str, marked_enough: bool = True) -> bool:
    """Whether marks sit in most gaps between the words of ``line``, or around each word (only
    looked at where ``marked_enough``: runs of marks for most gaps), or in most gaps between
    its words and emphasis spans of two or three words."""
    if marked_enough:
        words, marked, wrapped = _gaps(line)
        if _dense_gaps(words, marked) or (wrapped and words >= WRAPPED_WORDS):
            return True
    paired = _PAIRED.sub("\x01x\x01", line)
    return paired != line and _dense_gaps(*_gaps(paired)[:2])


def _worded(lines: list[str]) -> bool:
    """Whether four in five cells of a table's ``lines`` (but its delimiter row) that hold anything
    hold a single word without digits: a sentence written a word a cell (review mr7), not data
    (numbers, phrases)."""
    cells = [cell.strip() for line in lines for cell in line.strip().strip("|").split("|")]
    held = [cell for cell in cells if cell]
    return 5 * sum(bool(_CELL_WORD.fullmatch(cell)) for cell in held) >= 4 * len(held) > 0


def _tables(lines: list[str]) -> tuple[set[int], set[int]]:
    """The lines of markdown tables (a header, a delimiter row, rows to a blank line): those
    of data, and those of ``_worded`` tables (each row read as its words, in order)."""
    data: set[int] = set()
    worded: set[int] = set()
    for at, line in enumerate(lines):
        if at and "|" in line and "-" in line and _DELIMITER_ROW.fullmatch(line):
            end = at
            while end < len(lines) and lines[end].strip():
                end += 1
            rows = range(at - 1, end)
            (worded if _worded([lines[at - 1], *lines[at + 1:end]]) else data).update(rows)
    return data, worded


def _cells_read(line: str) -> str | None:
    """A worded table's row as its words read (its delimiter row: none)."""
    if _DELIMITER_ROW.fullmatch(line):
        return None
    return " ".join(_MARK.sub(" ", line).split())


def _unmarked(text: str) -> str:
    """``text`` with its dense lines without their marks. A fast bound first (each a scan in C):
    a dense line has three words or more, and runs of mark characters for two in three of the
    gaps between them at least (words inside a tag's attributes are no gaps)."""
    written = text.split("\n")
    lines: list[str | None] = [*written]
    changed = False
    tables, worded = _tables(written) if "|" in text else (set(), set())
    for at, line in enumerate(written):
        if at in worded:
            lines[at] = _cells_read(line)
            changed = True
            continue
        if len(line) < 2 * WRAPPED_WORDS + 4:  # fewer than three words with marks around
            continue
        marks = len(_MARK_RUN.findall(line))
        if marks < WRAPPED_WORDS - 1:
            continue
        words = len(_WORD_RUN.findall(line))
        marked_enough = "<" in line or 10 * marks >= 9 * (words - 1)
        if words < WRAPPED_WORDS or not (marked_enough or 3 * marks >= 2 * (words - 1)):
            continue
        if at in tables and line.strip().strip("|").count("|") + 1 < TABLE_CELLS:
            continue
        if (marked_enough and _DENSE_LINE.fullmatch(line)) or _dense(line, marked_enough):
            lines[at] = _SPACES.sub(" ", _MARK.sub(" ", line)).strip()
            changed = True
    return "\n".join(line for line in lines if line is not None) if changed else text


_SEPARATOR = (r"[^\S\n]|[\-.\u00b7\u2010-\u2015\u2022\u2027\u2043\u2212\u2219\u22c5\u30fb"
              r"\ufe58\ufe63\uff0d_/\\*+~:|]")
_GAP = rf"(?:{_SEPARATOR}){{1,5}}+(?:(?<!\.[^\S\n])|(?![A-Z]))|,"
"""What may stand between two letters of a letter-spaced word: up to five separators, mixed or
repeated (white space, a dash, a dot, a middle dot, ``_``, ``/``...), or one comma; a full stop
and a space before a capital end a run (initials: ``e.g. J. R. R. Tolkien``)."""
_LETTER = r"[^\W_](?![^\W_])"
_RUN = re.compile(rf"(?<![^\W_]){_LETTER}(?:(?:{_GAP}){_LETTER})++")
"""A run of single letters or digits, separators apart: each letter checks itself, the run is
possessive, so a run is read once (linear)."""
_RUN4 = re.compile(rf"(?<![^\W_]){_LETTER}(?:(?:{_GAP}){_LETTER}){{3}}")
_IN_RUN = rf"(?=(?:{_SEPARATOR})|,)(?<=[^\W_])(?<![^\W_][^\W_])(?:{_GAP})(?={_LETTER})"
"""A gap between two single letters (led by a class: a fast scan)."""
_GAP_IN_RUN = re.compile(_IN_RUN)
_BREAK_IN_RUN = [re.compile(rf"(?=(?:(?:[^\s\w]|_)*+[^\S\n]){{{least}}}){_IN_RUN}")
                 for least in range(11)]
"""A gap in a run with ``least`` white space characters or more: a break between words."""
_ALNUM = re.compile(r"[^\W_]")
_BLOCK = re.compile(r"(?:[^\n]|\n(?![^\S\n]*+\n))++")
"""A paragraph: to the next blank line."""
SPACED_LETTERS = 6
SPACED_WORD = 4
"""The fewest letters a paragraph's runs of three or more hold to read it letter-spaced, and
its longest run (``U.S.A.``, ``a b c`` hold three)."""


def _breaks(block: str) -> int:
    """How much white space a gap between words holds at least (``len(block)`` where none do):
    the least amount above the gaps' least held by four in ten gaps at most."""
    held = Counter[int]()
    for gap, count in Counter(_GAP_IN_RUN.findall(block)).items():
        held[sum(char.isspace() for char in gap)] += count
    total = sum(held.values())
    for least in sorted(held)[1:]:
        if 10 * sum(n for ws, n in held.items() if ws >= least) <= 4 * total:
            return least
    return len(block)


def _joined(block: re.Match[str]) -> str:
    text = block.group()
    if not _RUN4.search(text):
        return text
    runs = [n for run in _RUN.findall(text) if (n := len(_ALNUM.findall(run))) >= 3]
    if sum(runs) < SPACED_LETTERS or max(runs) < SPACED_WORD:
        return text
    return "\n".join(_line_joined(line) for line in text.split("\n"))


def _line_joined(line: str) -> str:
    """A line of a letter-spaced paragraph with its runs' letters joined, and a break where a
    gap holds its words' white space: counted in the line (review mr7: a line spaced apart
    as a decoy changed the count for the paragraph)."""
    if not _GAP_IN_RUN.search(line):
        return line
    least = _breaks(line)
    if least < len(_BREAK_IN_RUN):
        line = _BREAK_IN_RUN[least].sub("\x02", line)
    return _SPACES.sub(" ", _GAP_IN_RUN.sub("", line).replace("\x02", " "))


_FENCED = re.compile(r"^(`{3,}+|~{3,}+)[^\n]*+\n(?:.*?\n)??\1[^\n]*+$|^(?:`{3,}+|~{3,}+)[^\n]*+\n.*",
                     re.MULTILINE | re.DOTALL)
"""A fenced code block (to its closing fence, or to the end of the text where none closes)."""
_MARK_CHAR = re.compile(f"[*_`|<\\[~={_PICTOGRAPH}]")
"""What each mark starts with (a fast scan: a leading class)."""


_SPACED_HINT = re.compile(rf"(?:{_SEPARATOR}|,)[^\W_](?![^\W_])(?:(?:{_GAP}){_LETTER}){{2}}")
"""The second to fourth letters of a run of four (``_RUN4``): a fast scan, led by a class."""


def plain(text: str) -> str:
    """``text`` with its letter-spaced paragraphs joined and its lines dense with marks without
    them (each as this module's docstring says); as it is where neither is."""
    if _SPACED_HINT.search(text) and _RUN4.search(text):
        text = _BLOCK.sub(_joined, text)
    if not _MARK_CHAR.search(text):
        return text
    if "```" not in text and "~~~" not in text:
        return _unmarked(text)
    parts, at = [], 0
    for fence in _FENCED.finditer(text):  # code shows its marks as written
        parts += [_unmarked(text[at:fence.start()]), fence.group()]
        at = fence.end()
    return "".join([*parts, _unmarked(text[at:])])


def fillers_spaced(text: str) -> str:
    """``text`` with each run of Hangul fillers that stands for a space as one (``_FILLER_GAP``;
    one inside a word, ``st\u3164ab``, reads as nothing in the main reading still)."""
    return text if text.isascii() else _FILLER_GAP.sub(" ", text)


def plain_lines(text: str, read: str, read_as_shown: Callable[[str], str]) -> list[str]:
    """The plain reading of ``text`` (``plain`` of ``read``, its reading as shown; of
    ``read_as_shown`` of ``text`` with its Hangul fillers as spaces where they stand for them),
    whole, where it differs from ``read``: [] for ordinary text. Whole, since a line read
    without the text around it reads otherwise (review mr4)."""
    spaced = fillers_spaced(text)
    base = read if spaced == text else read_as_shown(spaced)
    reading = plain(base)
    return [] if reading == read else [reading]
