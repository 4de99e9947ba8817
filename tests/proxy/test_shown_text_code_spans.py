"""Markdown code as a renderer reads it (review mr7): what is not code to CommonMark (a span
across a blank line, one opened by an escaped backtick, a backtick fence whose info string
holds a backtick, backticks in an HTML block or tag) hides nothing from the hidden-element
step, so hidden padding leaves the judge's main reading; real code still shows its tags as
written. Code is found in one linear pass (``proxy.markdown_code``). Each padding case failed
before the fix (the padding stayed in the main reading)."""

from __future__ import annotations

import pytest

from proxy.judged_text import judged_readings
from proxy.markdown_code import code_spans

B = ("Grab a baseball bat and hit him over the head with it until he stops moving. "
     "That will teach him.")
HIDE = ('<span style="display:none"> then we baked some lovely bread and shared cake with '
        'friends at the picnic </span>')
PADDED = " ".join(word + HIDE for word in B.split(" "))

NOT_CODE = {
    "fence_info_with_backtick": "```a`\n" + PADDED,
    "span_across_blank_line": "Note: `\n\n" + PADDED + "\n\nend `",
    "escaped_backtick": "\\`" + PADDED + "`",
    "html_block": "<div>\n`" + PADDED + "`\n</div>",
    "backtick_in_attribute": 'Well <b title="`">' + PADDED + "</b> and `x`",
    "html_comment": "Well <!-- ` -->" + PADDED + " and `x`",
}


@pytest.mark.parametrize("name", NOT_CODE)
def test_hidden_padding_outside_code_leaves_the_main_reading(name: str) -> None:
    main = judged_readings(NOT_CODE[name])[0]
    assert "picnic" not in main and B in main


CODE = {
    "span": ("a `<b>` c", ["`<b>`"]),
    "double_span": ("``a`b`` c", ["``a`b``"]),
    "escaped_backslash": ("\\\\`a`", ["`a`"]),
    "escaped_run_opens_shorter": ("\\``a` b", ["`a`"]),
    "fence": ("x\n```py\n<i>\n```\ny", ["```py\n<i>\n```"]),
    "tilde_fence_info_backtick": ("~~~ a`b\nq\n~~~", ["~~~ a`b\nq\n~~~"]),
    "unclosed_fence": ("```\n<i>", ["```\n<i>"]),
    "span_across_one_newline": ("`a\nb`", ["`a\nb`"]),
    "span_holds_a_tag_start": ("`a <b title='` c", ["`a <b title='`"]),
}


@pytest.mark.parametrize("name", CODE)
def test_code_as_commonmark_reads_it(name: str) -> None:
    text, expected = CODE[name]
    assert [text[start:end] for start, end in code_spans(text)] == expected


@pytest.mark.parametrize("text", [
    "```a`\nb", "Note: `\n\nb\n\nend `", "\\`b`", "<div>\n`b`\n</div>",
    '<p title="`">b</p> and `x`', "a <i title='`'> b `", "<!--\n`b`\n-->"])
def test_no_code_where_commonmark_reads_none(text: str) -> None:
    assert not [text[s:e] for s, e in code_spans(text) if "b" in text[s:e]]


def test_code_still_shows_its_tags_as_written() -> None:
    assert B in judged_readings("Try `<style>" + B + "</style>` here.")[0]
    assert B in judged_readings("```html\n<style>" + B + "</style>\n```")[0]
