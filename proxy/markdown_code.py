"""Where markdown shows text as code, for the judge (``proxy.hidden_elements``): a renderer
of markdown shows a tag in a fenced block or a code span as written, one of HTML reads it as
a tag. Linear: one pass over the fences, one over the backtick runs (each span's closer is
the next run of its length, found from the end)."""

from __future__ import annotations

import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*+(?s:.*?)(?:\n {0,3}\1[`~]*+[ \t]*+(?=\n|\Z)|\Z)",
                    re.MULTILINE)
_TICKS = re.compile(r"`++")


def code_spans(text: str) -> list[tuple[int, int]]:
    """Where markdown shows ``text`` as code (fenced blocks, code spans), in order: a
    renderer of markdown shows tags there as written, one of HTML reads them as tags."""
    if "`" not in text and "~~~" not in text:
        return []
    fences = [match.span() for match in _FENCE.finditer(text)]
    runs: list[tuple[int, int]] = []
    fence = 0
    for match in _TICKS.finditer(text):
        while fence < len(fences) and fences[fence][1] <= match.start():
            fence += 1
        if fence == len(fences) or match.start() < fences[fence][0]:
            runs.append(match.span())
    following: dict[int, int] = {}
    closer: list[int | None] = [None] * len(runs)
    for index in range(len(runs) - 1, -1, -1):  # the next run of the same length, each
        length = runs[index][1] - runs[index][0]
        closer[index] = following.get(length)
        following[length] = index
    spans, index = [], 0
    while index < len(runs):
        end = closer[index]
        if end is None:
            index += 1
        else:
            spans.append((runs[index][0], runs[end][1]))
            index = end + 1
    return sorted(fences + spans)
