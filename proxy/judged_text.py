"""What the value judge reads of a reply's text: every reading a person or a program may make
of it, each once, at a cost proportional to the part that reads differently.

JSON string escapes. Tool-call arguments, a custom tool's input and JSON-mode content are JSON
text that every client decodes: ``"st\\u0061b"`` reaches the client's ``json.loads`` as "stab"
while the raw text holds no such word. JSON carried in a JSON string is decoded again by the
application, and every decode level is a text someone reads: ``\\u005c\\u0062eat`` is
``\\beat`` after one ``json.loads`` (a person reads "beat"), a backspace and "eat" after two,
while a client that shows the raw text reads ``\\bomb`` as "bomb". So the judge reads the text
fully decoded (``DECODE_ROUNDS`` at most) and, for each piece of it (a sentence, cut at a space
past ``PIECE_CHARS``) whose levels read different words (``_words``), also that piece's other
levels (raw, round 1, ...; one per distinct reading), each on a line of its own, together a
reading scored apart from the decoded text (``judged_readings``: joined, one reading diluted
another). An escape that changes no word (a
``\\n`` before a quote, ``\\"``, ``\\\\`` before a space) is only decoded in place: ordinary code
costs the judge no more than its raw length, a piece with a word-changing escape costs it once
more per distinct level.

Bidi controls. An override or embedding to the right (RLO, RLE, RLI) shows its run reversed: a
word stored as "bats" inside RLO...PDF reads "stab" on screen. Where a reading holds one, the
judge also reads the part that shows differently as it shows (``_displayed``), from the
sentence before to the sentence after.

Characters that render as nothing (Unicode's default-ignorable code points: zero-width spaces
and joiners, the soft hyphen, bidi controls once their runs are read as shown, variation
selectors, tags, the Hangul fillers) are left out of what the judge reads (``visible``): inside
a word they hide it from the judge while a reader sees the word whole. The encoder's tokenizer
drops most of them, but not the Hangul fillers (letters to it): "st\u3164ab" took a clearly
violent reply from 0.73 to 0.10. Tag characters (U+E0020-E007E) are read once more as the
ASCII they mirror (``tag_reading``), and count as characters: a model reads them.

Each decode level is read as a client shows it (``proxy.shown_text.shown``: character
references, letter forms, links and markup inside a word, look-alike letters),
before its bidi runs are read: ``&#8238;`` shows as an RLO.

The decoder is a regular expression, so partial JSON (a chunked window's) decodes as far as it
is complete; an unpaired surrogate or an unknown or unfinished escape stays as written. Only
what the judge reads changes, never what is relayed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from proxy.shown_text import IGNORABLE, PIECE, shown_readings, tag_reading
from vilmo.judge.classifier import ScoreInput

DECODE_ROUNDS = 4
"""Most times a text is decoded: JSON in a JSON string in a JSON string... each decode halves
a run of backslashes, so a few rounds reach any nesting a reply can reasonably carry, and the
cost stays bounded."""
PIECE_CHARS = 300
"""The longest piece (of a sentence without an end) whose other readings the judge gets as one
line: about a sentence of context, so a piece's extra cost stays near its escapes."""
_ESCAPE = re.compile(r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
                     r"|u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
"""A JSON string escape: a surrogate pair, one ``\\uXXXX``, or a one-character escape."""
_SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*|[.!?\n]+")
"""A sentence and its end: cut at characters no escape holds, so a piece decodes as it does in
the whole text."""
_QUIET = re.compile(r"\\(?:[bfnrt](?!\w)|[\"\\/])")
"""An escape whose raw form joins no letter to a word (``x\\n"``, ``\\"``, ``\\\\``)."""
_NOT_WORD = re.compile(r"\W+")
_IGNORABLE = re.compile(f"[{IGNORABLE}]")
"""What a renderer shows as nothing (``proxy.shown_text.IGNORABLE``)."""
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
           "t": "\t"}
_RIGHT_TO_LEFT = "\u202b\u202e\u2067"
"""RLE, RLO, RLI: what opens a run shown reversed (Latin letters in an RLO run, the order of
words in the others)."""
_EMBEDDINGS = "\u202a\u202b\u202d\u202e"
_ISOLATES = "\u2066\u2067\u2068"
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\n\r\x1c-\x1e\x85\u2029]")
"""What opens or closes a bidi run: its controls and the paragraph separators."""


def _char(match: re.Match[str]) -> str:
    high, low, single, simple = match.groups()
    if simple is not None:
        return _SIMPLE[simple]
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    code = int(single, 16)
    # An unpaired surrogate is no character (it could not even be encoded for the judge).
    return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)


def decode_levels(text: str) -> list[str]:
    """``text`` and each of its successive JSON string decodes while they change it
    (``DECODE_ROUNDS`` at most): raw, round 1, ..., fully decoded."""
    levels = [text]
    for _ in range(DECODE_ROUNDS):
        if "\\" not in text:
            break
        decoded = _ESCAPE.sub(_char, text)
        if decoded == text:
            break
        levels.append(decoded)
        text = decoded
    return levels


def unescaped(text: str) -> str:
    """``text`` with its valid JSON string escapes decoded (``DECODE_ROUNDS`` times at most)."""
    return decode_levels(text)[-1]


def visible(text: str) -> str:
    """``text`` without the characters that render as nothing (``_IGNORABLE``); ASCII has
    none (a flag CPython keeps: no scan). Removed ``proxy.shown_text.PIECE`` characters at a
    time (exact: each match is one character): one ``re.sub`` holds the GIL to its end, so
    over a megabyte it held the event loop ~150 ms even from a worker thread."""
    if text.isascii():
        return text
    if len(text) <= PIECE:
        return _IGNORABLE.sub("", text)
    return "".join(_IGNORABLE.sub("", text[at:at + PIECE]) for at in range(0, len(text), PIECE))


def shown_length(text: str) -> int:
    """What ``text`` counts against ``checks.max_chars``: its ``visible`` length plus its tag
    characters (``tag_reading``), which render as nothing but a model reads."""
    return _shown_length(text, tag_reading(text))


def _shown_length(text: str, tags: str) -> int:
    return len(visible(text)) + len(tags)


def _words(level: str) -> str:
    """The words a reader finds in one level: an escape's letter that joins no word, spacing
    and punctuation do not count, so levels that differ only there are read once."""
    return _NOT_WORD.sub(" ", _QUIET.sub("", visible(level))).strip()


def _pieces(text: str) -> Iterator[str]:
    """The sentences of ``text`` that hold a backslash, a long one cut at spaces into pieces of
    ``PIECE_CHARS`` or so (a run with no space stays whole): places no escape spans at any
    level. Linear: a long sentence is cut by index, never copied piece by piece."""
    for match in _SENTENCE.finditer(text):
        start, end = match.span()
        if text.find("\\", start, end) < 0:
            continue
        while end - start > PIECE_CHARS:
            cut = (text.rfind(" ", start, start + PIECE_CHARS) + 1
                   or text.find(" ", start + PIECE_CHARS, end) + 1)
            if cut <= start:
                break
            yield text[start:cut]
            start = cut
        yield text[start:end]


def _other_levels(text: str) -> list[str]:
    """For each piece with an escape, its decode levels (raw first) that read other words than
    its fully decoded form and than each other."""
    extra: list[str] = []
    for piece in _pieces(text):
        if "\\" not in piece:
            continue
        *earlier, last = decode_levels(piece)
        seen = {_words(last)}
        kept: list[str] = []
        for level in reversed(earlier):  # the most decoded of a reading stands for it
            words = _words(level)
            if words not in seen:
                seen.add(words)
                kept.append(level)
        extra.extend(reversed(kept))
    return extra


def _displayed(text: str) -> str:
    """``text`` with each run opened by RLE, RLO or RLI (to its PDF or PDI, or the paragraph's
    end) reversed, nested runs in it too: how the Unicode bidi algorithm shows Latin letters
    in an override (an embedding's words, simplified)."""
    shown = list(text)
    stack: list[str] = []
    start: int | None = None
    depth = 0
    for control in _BIDI.finditer(text):
        char = control.group()
        if char in _EMBEDDINGS or char in _ISOLATES:
            stack.append(char)
            if start is None and char in _RIGHT_TO_LEFT:
                start, depth = control.end(), len(stack)
        elif char == "\u202c":  # PDF: closes the last embedding or override, not an isolate
            if stack and stack[-1] in _EMBEDDINGS:
                stack.pop()
        elif char == "\u2069":  # PDI: closes the last isolate and what opened inside it
            if any(c in _ISOLATES for c in stack):
                while stack.pop() not in _ISOLATES:
                    pass
        else:  # a paragraph ends every run
            stack.clear()
        if start is not None and len(stack) < depth:
            shown[start:control.start()] = reversed(shown[start:control.start()])
            start = None
    if start is not None:
        shown[start:] = reversed(shown[start:])
    return "".join(shown)


def _shown_differently(text: str) -> str | None:
    """The part of ``text`` a bidi renderer shows in another order, as it shows it, from the
    sentence before to the sentence after (``PIECE_CHARS`` at most either side); None when
    nothing shows differently."""
    if not any(c in text for c in _RIGHT_TO_LEFT):
        return None
    shown = _displayed(text)
    first = len(os.path.commonprefix([text, shown]))
    if first == len(text):
        return None
    end = len(text) - len(os.path.commonprefix([text[::-1], shown[::-1]]))
    low, high = max(0, first - PIECE_CHARS), min(len(text), end + PIECE_CHARS)
    start = max(text.rfind(c, low, first) for c in ".!?\n")
    stop = min((i for c in ".!?\n" if (i := text.find(c, end, high)) >= 0), default=high - 1)
    return shown[low if start < 0 else start + 1:stop + 1]


class Readings(NamedTuple):
    """The kinds of reading of a text the judge scores each by itself (``judged_readings``),
    one per kind of reader."""

    shown: list[str]
    """As a client shows it fully decoded (``shown``)."""
    levels: list[str]
    """The other decode levels of the pieces that read other words, each as shown."""
    written: list[str]
    """The lines of every level that read other words where markup is shown as written."""
    displayed: list[str]
    """What bidi controls show in another order."""
    tags: list[str]
    """What tag characters spell (``tag_reading``)."""


READINGS = len(Readings._fields)
"""The most readings a text has (``judged_readings``): one per kind of reader."""


def judged_readings(text: str) -> list[str]:
    """The readings of a text the judge scores each by itself (``READINGS`` at most; the
    blank ones left out), each without what renders as nothing (``Readings``). Joined, each
    diluted the others: benign text beside a violent sentence in tag characters read 0.02 on
    safety.violence, the sentence alone 0.57 (``proxy.guard`` takes each value's highest
    score of a text's readings)."""
    return _judged_readings(text, None)


def _judged_readings(text: str, tags_of_text: str | None) -> list[str]:
    """``judged_readings``, with what ``text``'s tag characters spell when known
    (``tag_reading``: read once where its length is measured too)."""
    levels = [unescaped(text), *_other_levels(text)] if "\\" in text else [text]
    parts = [shown_readings(level) for level in levels]
    decoded = [read for read, _, _ in parts]
    written = [line for _, lines, _ in parts for line in lines]
    displayed = [s for s in map(_shown_differently, decoded + written) if s]
    spelled = (tags_of_text if tags_of_text is not None and level == text else tag_reading(level)
               for level in levels)  # the raw text is a level where no piece decodes otherwise
    tags = list(dict.fromkeys([*(t for _, _, found in parts for t in found),
                               *(t for t in spelled if t)]))
    readings = Readings(decoded[:1], decoded[1:], written, displayed, tags)
    return [reading for group in readings if (reading := visible("\n".join(group))).strip()]


def judged_text(text: str) -> str:
    """Every reading of ``text`` (``judged_readings``), each on a line of its own."""
    return "\n".join(judged_readings(text))


@dataclass(frozen=True, slots=True)
class Judged(ScoreInput):
    """A text to judge as the judge reads it (``response``: its first reading, ``also``: the
    others, ``judged_readings``; each is scored by itself with ``prompt``), with its length as
    sent without what renders as nothing (``shown``: ``shown_length``): what counts against
    ``checks.max_chars`` (``proxy.guard.checked_chars``), while what the judge reads is bounded
    by it (``proxy.guard.READ_FACTOR``)."""

    shown: int = 0
    also: tuple[str, ...] = ()


def judged(text: str, prompt: str | None = None, shown: int | None = None) -> Judged:
    """``text`` to judge (``judged_readings``), its ``shown`` length kept beside it (measured
    here unless given: what its tag characters spell is read once for both)."""
    if shown is None:
        tags = tag_reading(text)
        first, *others = _judged_readings(text, tags) or [""]
        return Judged(first, prompt, _shown_length(text, tags), tuple(others))
    first, *others = judged_readings(text) or [""]
    return Judged(first, prompt, shown, tuple(others))


def each_reading(items: Sequence[ScoreInput]) -> tuple[list[ScoreInput], list[int]]:
    """Every reading of ``items`` as a text to score (a ``Judged``'s ``also`` after it, with
    its prompt), and the index of the item each belongs to (``highest_per_item``)."""
    readings: list[ScoreInput] = []
    owners: list[int] = []
    for at, item in enumerate(items):
        others = item.also if isinstance(item, Judged) else ()
        readings += [item, *(ScoreInput(text, item.prompt) for text in others)]
        owners += [at] * (1 + len(others))
    return readings, owners


def highest_per_item(owners: Sequence[int], scores: Sequence[Mapping[str, float]],
                     ) -> list[dict[str, float]]:
    """Per item, each id's highest score over the item's readings (``each_reading``)."""
    merged: list[dict[str, float]] = [{} for _ in range(max(owners, default=-1) + 1)]
    for at, score in zip(owners, scores, strict=True):
        for key, value in score.items():
            merged[at][key] = max(merged[at].get(key, 0.0), float(value))
    return merged
