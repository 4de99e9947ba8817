"""What of an upstream's error reply reaches the client: a 429's Retry-After, as bounded whole
seconds, and a rejected request's ``param`` and ``code``, when they are short identifiers.

Everything else an upstream says about a failure is text nothing checked: it goes to the log
only (``proxy.upstream_log``). These two are the exceptions, so each is rebuilt or matched here
and never relayed as text: a Retry-After is re-emitted from the value it was parsed to (an
HTTP date's trailing text, which ``email.utils`` ignores, never passes), and a label is
redacted first and then must look like an identifier (``max_tokens``,
``context_length_exceeded``, ``messages.[0].content``), not a sentence, a URL or a key.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

MAX_RETRY_AFTER_S: Final = 3600
"""The longest wait passed on to a client (an hour); a longer one is cut to it."""
SECONDS: Final = re.compile(r"[0-9]+")

MAX_LABEL_CHARS: Final = 64
LABEL_CHARS: Final = re.compile(r"(?:[A-Za-z0-9_.-]|\[[0-9]{1,4}\])+")
"""An identifier's characters: ASCII letters, digits, ``_.-`` and list indexes (``[0]``); no
space, ``:``, ``/``, ``@``, ``+`` or ``=`` (no sentence, URL, address or base64 key)."""
WORD: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
"""A word of a label, snake_case or CamelCase."""
MAX_LABEL_WORDS: Final = 4
"""``string_above_max_length`` has four; ``go_and_stab_them_all`` is a sentence."""
MAX_WORD_CHARS: Final = 12
"""The longest word (``IWillStabYouTonight`` has short ones; ``stabthemallnow`` is one)."""
TOKEN_LIKE: Final = re.compile(r"[A-Za-z][0-9]|[0-9][A-Za-z]|[0-9]{5}")
"""Letters and digits run together, or a long number: a key, a hash or a token, not a name."""


def retry_after(value: str | None, now: float | None = None) -> dict[str, str]:
    """The Retry-After header for the client: the upstream's, in whole seconds (an HTTP date
    counted from ``now``), at most ``MAX_RETRY_AFTER_S``; none when it is neither."""
    seconds = retry_after_s(value, time.time() if now is None else now)
    return {} if seconds is None else {"retry-after": str(seconds)}


def retry_after_s(value: str | None, now: float) -> int | None:
    """The seconds a Retry-After (delta seconds or an HTTP date) asks for, bounded."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > 64:  # an HTTP date has 29 characters
        return None
    if SECONDS.fullmatch(value):
        return min(int(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, its zone unsaid
        when = when.replace(tzinfo=UTC)
    try:
        delta = when.timestamp() - now
    except (OverflowError, OSError, ValueError):
        return None
    return max(0, min(math.ceil(delta), MAX_RETRY_AFTER_S))


def error_label(value: object, redact: Callable[[str], str]) -> str | None:
    """An upstream error's ``param`` or ``code`` as the client may see it, or None: a string
    with no secret in it (``redact`` leaves it as it is), of ``LABEL_CHARS``, at most
    ``MAX_LABEL_CHARS`` long, of at most ``MAX_LABEL_WORDS`` words of at most
    ``MAX_WORD_CHARS`` letters, with no letters and digits run together."""
    if type(value) is not str or not value or len(value) > MAX_LABEL_CHARS:
        return None
    if not LABEL_CHARS.fullmatch(value) or TOKEN_LIKE.search(value) or redact(value) != value:
        return None
    words = WORD.findall(value)
    if len(words) > MAX_LABEL_WORDS or any(len(word) > MAX_WORD_CHARS for word in words):
        return None
    return value
