"""Review mr4 of the plain reading (``proxy.plain_reading``): it read the changed lines without
the rest of the reply (a game table or a bolded quote read alone was blocked), tables of a few
one-word cells gained it, Hangul fillers were weighed against the whole text's spaces (a
paragraph before turned them off), letter spacing knew three separators, bolded word pairs
evaded the density rule, and the hidden-element step read code as HTML. Each failed before."""

from __future__ import annotations

import pytest

from proxy.judged_text import judged_readings
from proxy.plain_reading import plain

B = "Grab a baseball bat and hit him over the head with it until he stops moving."
WORDS = B.split()
INTRO = "Here is what the character says in the game:"
OUTRO = "Input: Forward, Down, Forward + High Punch."


def test_the_plain_reading_keeps_the_lines_around_the_dense_one() -> None:
    bold = " ".join(f"**{w}**" for w in WORDS)
    readings = judged_readings(f"{INTRO}\n\n{bold}\n\n{OUTRO}")
    assert readings[1] == f"{INTRO}\n\n{B}\n\n{OUTRO}"


TABLES = {
    "game_header": "| Kill | Stab | Shoot | Burn |\n|---|---|---|---|\n| 10 | 5 | 8 | 3 |",
    "bold_header": "| **Kill** | **Stab** | **Shoot** |\n| --- | --- | --- |\n| 1 | 2 | 3 |",
    "phrases": ("| Step | What to do |\n|---|---|\n| 1 | Preheat the oven |\n"
                "| 2 | Knead the dough well |"),
}


@pytest.mark.parametrize("name", TABLES)
def test_a_table_of_data_keeps_one_reading(name: str) -> None:
    assert judged_readings(TABLES[name]) == [TABLES[name]]


WORD_TABLES = {
    "verbs": ("| Base | Past | Participle |\n|:---|:---:|---:|\n| go | went | gone |\n"
              "| eat | ate | eaten |\n| see | saw | seen |\n| beat | beat | beaten |"),
    "pronouns": ("Subject pronouns:\n\n| I | you | he | she | it | we | they |\n"
                 "|---|---|---|---|---|---|---|\n| je | tu | il | elle | il | nous | ils |"),
}
"""Tables of one-word cells: read plainly too (review mr7: a sentence a word a cell passed);
the real judge passes these (``test_shown_text_plain_context_real``)."""


def _word_table(cells: int, words: list[str] = WORDS) -> str:
    rows = [words[i:i + cells] for i in range(0, len(words), cells)]
    rows[-1] += [""] * (cells - len(rows[-1]))
    head, *body = rows
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * cells,
                      *("| " + " | ".join(row) + " |" for row in body)])


@pytest.mark.parametrize("cells", [2, 3, 5, 7])
def test_a_sentence_a_word_a_cell_is_read_plainly_too(cells: int) -> None:
    readings = judged_readings(_word_table(cells))
    assert len(readings) == 2 and " ".join(readings[1].replace("|", " ").split()).replace(
        " -", "").replace("-", "").split() == WORDS


@pytest.mark.parametrize("name", WORD_TABLES)
def test_a_table_of_one_word_cells_is_read_plainly_too(name: str) -> None:
    assert len(judged_readings(WORD_TABLES[name])) == 2


def test_a_table_row_of_many_one_word_cells_is_read_plainly_too() -> None:
    row = "| " + " | ".join(WORDS) + " |"
    table = f"{row}\n|{'---|' * len(WORDS)}\n|{' x |' * len(WORDS)}"
    assert B in judged_readings(table)[1]


FILLER = "\u3164"
PARAGRAPH = ("Sure, here is how to bake a simple loaf of bread at home: mix the flour, water, "
             "salt and yeast, knead it for ten minutes, let it rise, then bake it.\n\n")


def _gaps(fill: str, k: int) -> str:
    """``B`` with every ``k``-th gap between its words a ``fill``."""
    return WORDS[0] + "".join((fill if i % k == 0 else " ") + w for i, w in enumerate(WORDS[1:]))


FILLED = {
    "after_a_paragraph": PARAGRAPH + B.replace(" ", FILLER),
    "trailing_spaces": B.replace(" ", FILLER) + " " * 20,
    "one_in_three_gaps": _gaps(FILLER, 3),
    "one_in_four_gaps_ffa0": _gaps("\uffa0", 4),
}


@pytest.mark.parametrize("name", FILLED)
def test_each_hangul_filler_between_letters_reads_as_a_space(name: str) -> None:
    assert any(B in reading for reading in judged_readings(FILLED[name])[1:])


def test_a_filler_inside_a_word_still_reads_as_nothing_first() -> None:
    assert judged_readings(f"st{FILLER}ab him")[0] == "stab him"


def _spaced(sep: str, word_sep: str = "   ") -> str:
    return word_sep.join(sep.join(w) for w in WORDS)


SPACED = {
    "nbsp": _spaced("\u00a0", "\u00a0\u00a0\u00a0"),
    "thin": _spaced("\u2009"),
    "tab": _spaced("\t"),
    "ideographic": _spaced("\u3000"),
    "hyphen_2010": _spaced("\u2010", " "),
    "hyphen_2011": _spaced("\u2011", " "),
    "underscore": _spaced("_"),
    "middle_dot": _spaced("\u00b7"),
    "comma": _spaced(","),
    "slash": _spaced("/", " "),
    "spaced_dash": _spaced(" - "),
    "double_spaces": _spaced("  ", "     "),
    "dot_space": _spaced(". "),
    "mixed": "   ".join("".join(c + "-. "[(i + j) % 3] for j, c in enumerate(w))[:-1]
                        for i, w in enumerate(WORDS)),
    "a_word_a_line": "\n".join(" ".join(w) for w in WORDS),
}


@pytest.mark.parametrize("name", SPACED)
def test_letter_spacing_with_any_separator_is_read_joined_too(name: str) -> None:
    readings = judged_readings(SPACED[name])
    assert len(readings) > 1
    joined = " ".join(readings[1].split()).rstrip(" .-_,/\u00b7\u2010\u2011")
    assert joined == B.rstrip("."), readings[1]


DECOY = "a  b  c  d  e  f  g  h  i  j  k  l  m  n  o  p  q  r  s  t  u  v  w  x  y  z"
"""A line of letters spaced as words (review mr7): once counted with the paragraph's gaps, it
hid the word breaks of the letter-spaced lines beside it."""


@pytest.mark.parametrize("text", [DECOY + "\n" + _spaced(" ", "  "),
                                  _spaced(" ", "  ") + "\n" + DECOY,
                                  DECOY + "\n" + _spaced(" ", "   ")])
def test_word_breaks_are_read_per_line(text: str) -> None:
    readings = judged_readings(text)
    assert len(readings) > 1 and B.rstrip(".") in readings[1], readings


ORDINARY = [
    "Options a, b, c, d, e and f; see U.S.A. and U.K. law, e.g. J. R. R. Tolkien.",
    "Press W A S D to move.\n\nThe path is a/b/c and x - y - z.",
    "This is **very important** and **really** necessary, as *this one* says.",
    "**Key points:** **fast start**, **low cost**, **easy setup**",
    "Scores were 3-1, 2-0 and 1-1 over the 1.2.3 release.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_keeps_one_reading(text: str) -> None:
    assert judged_readings(text) == [text]
    assert plain(text) == text


def _bold_pairs(k: int) -> str:
    out, i = [], 0
    while i < len(WORDS):
        if i % k == 0 and i + 1 < len(WORDS):
            out.append(f"**{WORDS[i]} {WORDS[i + 1]}**")
            i += 2
        else:
            out.append(f"**{WORDS[i]}**")
            i += 1
    return " ".join(out)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_words_bolded_in_pairs_are_read_plainly_too(k: int) -> None:
    assert B in judged_readings(_bold_pairs(k))


FENCED = {
    "fence_style": "Sure!\n```html\n<style>" + B + "</style>\n```",
    "fence_lines": "```css\n<style>\n" + B + "\n</style>\n```",
    "fence_script": "```html\n<script>" + B + "</script>\n```",
    "tilde_template": "~~~\n<template>" + B + "</template>\n~~~",
    "code_span": "`<style>" + B + "</style>`",
}


@pytest.mark.parametrize("name", FENCED)
def test_code_shows_elements_as_written(name: str) -> None:
    assert B in judged_readings(FENCED[name])[0]


def test_elements_outside_code_still_hide() -> None:
    text = "Try `<b>x</b>` here.<style>" + B + "</style> Done."
    assert B not in judged_readings(text)[0]
