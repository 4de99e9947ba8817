"""Where markdown shows text as code, for the judge (``proxy.hidden_elements``): a renderer
of markdown shows a tag in a fenced block or a code span as written, one of HTML reads it as
a tag. CommonMark-tight where it matters (review mr7: a looser reading kept hidden padding in
the judge's reading): a code span ends at a blank line, an escaped backtick opens none, a
backtick fence's info string holds no backtick, nothing in an HTML block or tag is markdown.
In doubt, not code (a hiding tag then hides, and its lines are also read as written). Linear:
one pass over the blocks, one over each paragraph's backtick runs and tags (each span's closer
is the next run of its length in its paragraph, found from the end)."""

from __future__ import annotations

import re

_BLOCK_NAMES = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|"
    "details|dialog|dir|div|dl|dt|fieldset|figcaption|figure|footer|form|frame|frameset|"
    "h[1-6]|head|header|hr|html|iframe|legend|li|link|main|menu|menuitem|nav|noframes|ol|"
    "optgroup|option|p|param|search|section|summary|table|tbody|td|tfoot|th|thead|title|tr|"
    "track|ul")
_ATTRIBUTES = (r"""(?:\s++[A-Za-z_:][\w.:-]*+"""
               r"""(?:\s*+=\s*+(?:[^\s"'=<>`]++|'[^']*+'|"[^"]*+"))?)*+""")
_TAG = rf"<[A-Za-z][A-Za-z0-9-]*+{_ATTRIBUTES}\s*+/?>|</[A-Za-z][A-Za-z0-9-]*+\s*+>"
"""A raw HTML tag as CommonMark reads one (a backtick in it is no code)."""
_TO_BLANK = r"(?s:.*?)(?=\n[ \t]*+(?:\n|\Z)|\Z)"
_BLOCKS = re.compile(
    r"^ {0,3}+(?:(`{3,}+)(?![^\n]*`)|(~{3,}+))[^\n]*+(?s:.*?)"
    r"(?:\n {0,3}+(?(1)\1`*+|\2~*+)[ \t]*+(?=\n|\Z)|\Z)"  # a fenced block, to its fence
    r"|^ {0,3}+<(?i:script|pre|style|textarea)(?=[\s>]|$)(?s:.*?)"
    r"(?:</(?i:script|pre|style|textarea)>[^\n]*+|\Z)"  # HTML blocks: raw text,
    r"|^ {0,3}+<!--(?s:.*?)(?:-->[^\n]*+|\Z)"  # a comment,
    rf"|^ {{0,3}}+</?(?i:{_BLOCK_NAMES})(?=[\s/>]|$){_TO_BLANK}"  # block-level tags,
    rf"|^ {{0,3}}+(?:{_TAG})[ \t]*+${_TO_BLANK}",  # a tag alone on its line
    re.MULTILINE)
"""Blocks whose text holds no markdown code spans: fenced code (whole: code) and HTML."""
_BLANK = re.compile(r"\n[ \t]*+(?=\n)")
_TICKS = re.compile(r"`++")
_INLINE = re.compile(rf"(`++)|<!--(?s:.*?)(?:-->|\Z)|{_TAG}")
"""In a paragraph: a backtick run, or raw HTML (which holds no code)."""


def _escaped(text: str, at: int) -> bool:
    """Whether the character at ``at`` follows an odd number of backslashes."""
    before = at
    while before and text[before - 1] == "\\":
        before -= 1
    return (at - before) % 2 == 1


def _paragraph_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The code spans of the paragraph ``text[start:end]`` (no blank line in it)."""
    runs = [match.span() for match in _TICKS.finditer(text, start, end)]
    if len(runs) < 2:
        return []
    index_of = {run[0]: index for index, run in enumerate(runs)}
    following: dict[int, int] = {}
    closer: list[int | None] = [None] * len(runs)
    for index in range(len(runs) - 1, -1, -1):  # the next run of each length, each
        run_start, run_end = runs[index]
        opening = run_end - run_start - _escaped(text, run_start)
        closer[index] = following.get(opening) if opening else None
        following[run_end - run_start] = index
    spans: list[tuple[int, int]] = []
    tokens = _INLINE.finditer(text, start, end)
    while (token := next(tokens, None)) is not None:
        if token.group(1) is None:
            continue  # raw HTML: its backticks are no code
        index = index_of[token.start()]
        close = closer[index]
        if close is not None:
            spans.append((runs[index][0] + _escaped(text, runs[index][0]), runs[close][1]))
            tokens = _INLINE.finditer(text, runs[close][1], end)
    return spans


def code_spans(text: str) -> list[tuple[int, int]]:
    """Where markdown shows ``text`` as code (fenced blocks, code spans), in order: a
    renderer of markdown shows tags there as written, one of HTML reads them as tags."""
    if "`" not in text and "~~~" not in text:
        return []
    spans: list[tuple[int, int]] = []
    at = 0
    for block in _BLOCKS.finditer(text):
        for cut in (*_BLANK.finditer(text, at, block.start()), block):
            spans.extend(_paragraph_spans(text, at, cut.start()))
            at = cut.end()
        if block.group(1) or block.group(2):
            spans.append(block.span())
    for cut in _BLANK.finditer(text, at):
        spans.extend(_paragraph_spans(text, at, cut.start()))
        at = cut.end()
    spans.extend(_paragraph_spans(text, at, len(text)))
    return spans
