"""An upstream's error text is redacted and cut without reading all of it (review rv1, r7).

``proxy.direct.error_fields`` parsed a whole error body of up to ``upstream.max_response_bytes``
(32 MiB) and returned all of it (or ``json.dumps`` of it) as the log message, and
``Redactor.cut`` redacted the whole text before cutting it to 500 characters: on the event
loop, 0.2-3 s for 30 MB. Now a large body is not parsed (its start is the message) and ``cut``
reads only the head of a text that can reach the cut, still redacting before it cuts: a secret
across the cut never survives in part. Also: an ``openai.OpenAIError`` whose ``status_code`` is
None (LiteLLM's ``APIError`` built from an exception without one) raised TypeError in
``map_upstream_errors`` instead of the gateway's 502."""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Iterator

import pytest
from litellm.exceptions import APIError

from proxy.direct import ERROR_BODY_BYTES, error_fields
from proxy.errors import GatewayError, map_upstream_errors
from proxy.redaction import REDACTED, Redactor

SECRET = "sk-upstream-secret-abcdef123456"  # 31 characters: longer than the marker
SHORT = "abc"  # replaced as a whole token only
HUGE = 3_000_000


class Counting(Redactor):
    """Records how far into a text each search for secrets reads (``cut`` searches with
    ``_any.finditer`` up to an end; a whole-text read records the text's length)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__(secrets)
        self.read: list[int] = []
        assert self._any is not None
        searched: re.Pattern[str] = self._any
        read = self.read

        class Recording:
            def finditer(self, text: str, pos: int = 0,
                         endpos: int = sys.maxsize) -> Iterator[re.Match[str]]:
                read.append(min(endpos, len(text)))
                return searched.finditer(text, pos, endpos)

            def sub(self, repl: str, text: str) -> str:
                read.append(len(text))
                return searched.sub(repl, text)

        self._any = Recording()  # type: ignore[assignment]


def test_a_long_text_is_redacted_by_its_head_only() -> None:
    redact = Counting([SECRET, SHORT])
    text = ("calm words " * (HUGE // 11)) + SECRET
    assert redact.cut(text) == text[:500]
    assert redact.read  # the spy sees the reads
    assert all(size <= 2 * (500 + len(SECRET) + 1) for size in redact.read), redact.read


@pytest.mark.parametrize("start", [*range(460, 540, 3), 499, 500, 500 + len(SECRET), 2 * (531 + 1) - 5])
def test_a_secret_across_the_cut_is_redacted(start: int) -> None:
    redact = Redactor([SECRET])
    text = "x" * start + SECRET + " tail" * 2_000
    cut = redact.cut(text)
    assert cut == redact(text)[:500]
    assert not any(SECRET[:n] in cut for n in range(4, len(SECRET) + 1) if start < 500)
    assert len(cut) == 500


def test_markers_shorter_than_their_secrets_read_on_past_the_first_window() -> None:
    redact = Redactor([SECRET])
    text = SECRET * 100 + "x" * HUGE
    cut = redact.cut(text)
    assert cut == (REDACTED * 50)[:500] == redact(text)[:500]
    assert "sk-" not in cut


def test_the_head_reads_as_the_whole_would() -> None:
    """Random texts of secrets (long, short, as words and inside words) and filler: the cut
    is the whole text redacted (in one pass) and cut, wherever the windows end; where the
    secrets stand apart, exactly what ``__call__`` and a cut gave before."""
    chooser = random.Random(7)
    redact = Redactor([SECRET, "tok-0123456789", SHORT, "zz"])
    pieces = [SECRET, "tok-0123456789", SHORT, "zz", " ", "x", "word ", "abcd", "-", "é"]
    for _ in range(300):
        text = "".join(chooser.choice(pieces) for _ in range(chooser.randrange(100, 1500)))
        limit = chooser.choice([10, 50, 200, 500])
        assert redact.cut(text, limit) == redact.in_one_pass(text)[:limit], (text, limit)
        apart = " ".join(chooser.choice(pieces) for _ in range(chooser.randrange(100, 1500)))
        assert redact.cut(apart, limit) == redact(apart)[:limit], (apart, limit)
    assert Redactor().cut("x" * 1000) == "x" * 500


def test_a_large_error_body_is_not_parsed() -> None:
    body = json.dumps({"error": {"message": "x " * (HUGE // 2), "code": "c"}}).encode()
    message, param, code = error_fields(body)
    assert len(message) <= ERROR_BODY_BYTES and (param, code) == (None, None)
    other = json.dumps({"detail": ["a b"] * (HUGE // 8)}).encode()
    assert len(error_fields(other)[0]) <= ERROR_BODY_BYTES
    small = json.dumps({"error": {"message": "bad", "param": "p", "code": "c"}}).encode()
    assert error_fields(small) == ("bad", "p", "c")
    assert error_fields(b'{"detail": "no"}') == ('{"detail": "no"}', None, None)


def test_an_openai_error_without_a_status_is_the_gateways_502() -> None:
    error = APIError(status_code=None, message="boom",  # type: ignore[arg-type] # as LiteLLM does
                     llm_provider="openai", model="m")
    with pytest.raises(GatewayError) as caught, map_upstream_errors(Redactor([SECRET]), "m"):
        raise error
    assert caught.value.status == 502 and caught.value.code == "upstream_error"
