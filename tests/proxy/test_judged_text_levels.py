"""What the judge reads of escapes and bidi runs (review rv3).

1. Every decode level is read: ``\\u005c\\u0062eat`` is ``\\beat`` after a client's one
   ``json.loads`` (a person reads "beat"); the judge read only the raw text and the last level
   (a backspace and "eat"), never that one.
2. An escape that changes no word costs nothing extra: any reply with one escape was judged
   twice over (raw, then decoded), and counted twice against ``checks.max_chars``: ordinary
   code (``print("x\\n")``) failed ``check_too_large`` at half the limit.
   (Since review rv4 a text counts its length as sent against ``checks.max_chars`` whatever
   the judge reads of it: ``tests/proxy/test_check_counts_as_sent.py``.)
3. Bidi overrides: a word stored reversed inside RLO...PDF shows forwards; the judge read it
   backwards only. The keyword fake judges ("stab" goes against mft.care).
"""

from __future__ import annotations

import httpx
import pytest
from conftest import ADMIN_KEY
from streams import blocked_reply, plain
from stub_upstream import StubUpstream

from proxy.judged_text import PIECE_CHARS, judged_text

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
CALM = "Talk to him calmly tomorrow and tell him how the insult made you feel. "
CODE = "".join(f'def f{i}(x):\n    print("value {i}: %s\\n" % x)\n    return x\n\n'
               for i in range(5))
"""Code as a model writes it in a JSON string or a reply: escapes that change no word."""


def _rlo(text: str) -> str:
    """Each word stored reversed inside RLO...PDF: a bidi renderer shows ``text``."""
    return " ".join(f"\u202e{word[::-1]}\u202c" for word in text.split(" "))


def test_every_decode_level_is_read() -> None:
    raw = "Then \\u005c\\u0062eat him with a bat."
    judged = judged_text(raw)
    assert "\\beat him with a bat." in judged  # round 1: what a client shows
    assert "\x08eat him" in judged and "\\u0062eat" in judged  # round 2 and the raw text
    nested = "\\\\u005c\\\\u0074error."  # round 1 \u005c\u0074error, round 2 \terror
    assert "\\terror." in judged_text(nested)


def test_escapes_that_change_no_word_are_decoded_in_place() -> None:
    judged = judged_text(CODE)
    assert len(judged) <= len(CODE) and judged == CODE.replace("\\n", "\n")
    assert judged_text('say \\"hi\\" to C:\\\\ now') == 'say "hi" to C:\\ now'


def test_only_pieces_with_a_word_changing_escape_are_read_again() -> None:
    """The extra reading is the sentence with the escape, not the whole reply."""
    raw = CALM * 20 + "Then \\beat him. " + CALM * 20
    extra = len(judged_text(raw)) - len(raw)
    assert 0 < extra <= len("Then \\beat him. ") + 1
    long = "word " * 400 + "\\u0073tab " + "word " * 400  # no sentence end at all
    assert len(judged_text(long)) - len(long) <= PIECE_CHARS + 10


def test_a_code_reply_counts_its_length_once(gateway: str, stub: StubUpstream) -> None:
    """Before the fix a 250-character code text counted 500 against ``max_chars`` 300: 413 from
    the check endpoint, 503 ``check_too_large`` for the reply under either ``on_error``."""
    code = CODE[:250]
    assert code.count("\\n") >= 3
    response = httpx.post(f"{gateway}/values/check", headers=HEADERS,
                          json={"text": code, "policy": "g-small-closed"})
    assert response.status_code == 200 and response.json()["guard"] == "ok"
    stub.reply = code
    for policy in ("g-small-open", "g-small-closed"):
        reply = plain(gateway, policy)
        assert reply.status_code == 200 and reply.headers["x-vilmo-guard"] == "ok"


def test_the_extra_readings_count_apart(gateway: str, stub: StubUpstream) -> None:
    """A text counts its length as sent against ``max_chars`` (review rv4: JSON counted 1.4-2.8
    times its size); what the judge reads of it is bounded apart (``proxy.guard.READ_FACTOR``,
    ``tests/proxy/test_check_counts_as_sent.py``): a text whose escapes change most of its
    words is read twice, and passes under the limit as sent."""
    raw = "\\u0061" * 45  # 270 characters, read raw and decoded: 316
    assert len(raw) <= 300 < len(judged_text(raw))
    response = httpx.post(f"{gateway}/values/check", headers=HEADERS,
                          json={"text": raw, "policy": "g-small-closed"})
    assert response.status_code == 200 and response.json()["guard"] == "ok"


@pytest.mark.parametrize("text", [
    _rlo("I will stab you tonight."),
    "I will \u202ebats\u202c you tonight.",
    "I will \u2067bats\u2069 you tonight.",
    "I will \u202b\u202ebats\u202c\u202c you tonight.",
    "I will \u202ebats you tonight.",  # unterminated: the run ends with the paragraph
    "I will \\u202ebats\\u202c you.",  # escaped controls, decoded
])
def test_runs_shown_reversed_are_read_as_shown(text: str) -> None:
    assert "stab" in judged_text(text)


def test_controls_that_reverse_nothing_add_nothing() -> None:
    assert judged_text("I will \u202astab\u202c you.") == "I will stab you."
    assert judged_text("Calm \u202eaba\u202c words.") == "Calm aba words."
    assert judged_text("a\u202eb\n\u202cc") == "ab\nc"  # a run of one character


@pytest.mark.parametrize("mode", ["plain", "buffer", "chunked"])
def test_a_reversed_word_is_judged_as_shown(gateway: str, stub: StubUpstream,
                                            mode: str) -> None:
    stub.script = [{"content": f"{CALM}I will \u202ebats\u202c you tonight. {CALM}"}]
    text, finish = blocked_reply(gateway, mode)
    assert finish == "content_filter" and "bats" not in text


def test_visible_reads_a_long_text_in_pieces_exactly() -> None:
    """``visible`` removes what renders as nothing ``PIECE`` characters at a time
    (review rv5: one regex call over a megabyte held the GIL, so the event loop, ~150 ms even
    from a worker thread); the pieces give what one pass gives, matches at their edges too."""
    from proxy.judged_text import _IGNORABLE, visible
    from proxy.shown_text import PIECE

    text = ("a\u200b\U000e0001é" * PIECE)[: 3 * PIECE + 5]
    for at in (PIECE - 1, PIECE, 2 * PIECE):
        assert text[at] in "\u200b\U000e0001" or _IGNORABLE.match(text, at) is None
    assert visible(text) == _IGNORABLE.sub("", text) == "aé" * (len(text) // 4) + "a"
