"""What the value judge reads of a reply's text: the text as sent and, where it carries JSON
string escapes, also the text a JSON parser makes of it.

Tool-call arguments, a custom tool's input and JSON-mode content are JSON text that every
client decodes: ``"st\\u0061b"`` reaches the client's ``json.loads`` as "stab" while the raw
text holds no such word. The decoded form alone would not do either: a client that shows the
raw text (plain content) reads ``"\\bomb"`` as "bomb" where a decoder reads a backspace and
"omb". So a text with a valid escape is judged as both, raw then decoded (windows and
sentence spans are max-pooled, so neither dilutes the other); a text without one is judged as
it is, at the cost of one scan for a backslash. Only what the judge reads changes, never what
is relayed.

Characters that render as nothing (Unicode's default-ignorable code points: zero-width spaces
and joiners, the soft hyphen, bidi controls, variation selectors, tags, the Hangul fillers)
are left out of what the judge reads: inside a word they hide it from the judge while a reader
sees the word whole. The encoder's tokenizer already drops most of them, but not the Hangul
fillers (letters to it): "st\u3164ab" took a clearly violent reply from 0.73 to 0.10.

The decoder is a regular expression, so partial JSON (a chunked window's) decodes as far as it
is complete; an unpaired surrogate or an unknown or unfinished escape stays as written.
Decoding repeats (``DECODE_ROUNDS``) for JSON carried in a JSON string, which an application
decodes again.
"""

from __future__ import annotations

import re

DECODE_ROUNDS = 4
"""Most times a text is decoded: JSON in a JSON string in a JSON string... each decode halves
a run of backslashes, so a few rounds reach any nesting a reply can reasonably carry, and the
cost stays bounded."""
_ESCAPE = re.compile(r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
                     r"|u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
"""A JSON string escape: a surrogate pair, one ``\\uXXXX``, or a one-character escape."""
_IGNORABLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
                        "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff"
                        "\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
                        "\U000e0000-\U000e0fff]")
"""Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15): what a
renderer shows as nothing."""
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
           "t": "\t"}


def _char(match: re.Match[str]) -> str:
    high, low, single, simple = match.groups()
    if simple is not None:
        return _SIMPLE[simple]
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    code = int(single, 16)
    # An unpaired surrogate is no character (it could not even be encoded for the judge).
    return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)


def unescaped(text: str) -> str:
    """``text`` with its valid JSON string escapes decoded (``DECODE_ROUNDS`` times at most)."""
    for _ in range(DECODE_ROUNDS):
        if "\\" not in text:
            break
        decoded = _ESCAPE.sub(_char, text)
        if decoded == text:
            break
        text = decoded
    return text


def visible(text: str) -> str:
    """``text`` without the characters that render as nothing (``_IGNORABLE``); ASCII has
    none (a flag CPython keeps: no scan)."""
    return text if text.isascii() else _IGNORABLE.sub("", text)


def judged_text(text: str) -> str:
    """The text the judge reads for a reply text: itself, and its decoded form if that
    differs (on a line of its own), each without what renders as nothing."""
    decoded = unescaped(text)
    return visible(text if decoded == text else f"{text}\n{decoded}")
