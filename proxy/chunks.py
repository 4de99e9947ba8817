"""Reading and writing OpenAI replies and stream chunks (dicts): the text a client can read in
each choice, one chunk per choice, new chunks shaped like the upstream's (same id, model,
created) for refusals, and the stream's total deadline."""

from __future__ import annotations

import asyncio
import bisect
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from itertools import chain
from typing import Any, cast

from proxy.errors import StreamTimeout, UpstreamFailed
from proxy.fields import NOT_TEXT_FIELDS, NOT_TEXT_PATHS
from proxy.judged_text import shown_length
from proxy.replies import ReplyMessage
from proxy.upstream import Chunk, Closing, Completion

CONTENT_FILTER = "content_filter"
TEXT_ORDER = ("reasoning_content", "reasoning", "content", "refusal", "audio", "transcript",
              "function_call", "tool_calls", "name", "arguments", "input")
"""The order a choice's texts are read in (others after these, by name): fixed, so that a
stream and its plain reply read the same whatever order their fields came in."""
_TOKEN = re.compile(r"\w+|[^\w\s]")

MAX_HELD_CHUNKS = 131_072
"""The most chunks a stream holds at once before it may send them (buffer mode: the whole
reply; chunked mode: what waits for a check, of every choice, and the usage): past it, 502
``upstream_too_large``, as past ``upstream.max_response_bytes``. A parsed chunk costs ~16 times
its bytes on the wire (a tiny one ~870 bytes, one without choices ~350), so 32 MiB of tiny
events held ~500 MiB; this holds at most ~110 MiB of chunks a stream. A real reply is about a
chunk a token: 131,072 is past any model's output limit (and, in buffer mode, far past a reply
of ``checks.max_chars``, whose reading stops there: ``held_reply``)."""

TextPath = tuple[str | int, ...]
"""Where a string sits in a message: keys, and for list items their ``index`` (a streamed
tool call's) or position."""


def tokens(text: str) -> int:
    """A tokenizer-free token count (words and punctuation), close enough for window sizes."""
    return len(_TOKEN.findall(text))


def texts_of(message: Mapping[str, Any]) -> Iterator[tuple[TextPath, str]]:
    """Every readable string of a message (or a delta), with where it sits: every string but
    those under ``NOT_TEXT_FIELDS`` and ``NOT_TEXT_PATHS`` (labels, ids and audio data, each
    made sure to be one where the reply entered: ``proxy.fields``, so nothing skipped here is
    words). Iterative: an upstream's nesting, however deep, cannot exhaust the stack."""
    stack: list[tuple[object, TextPath, tuple[str, ...]]] = []
    for key, value in message.items():  # a delta's own strings first, without the stack
        if isinstance(value, str):
            if value and key not in NOT_TEXT_FIELDS:
                yield (key,), value
        elif isinstance(value, (Mapping, list)):
            stack.append((value, (key,), (key,)))
    stack.reverse()
    while stack:
        value, path, keys = stack.pop()
        if isinstance(value, str):
            if value and keys[-1] not in NOT_TEXT_FIELDS and keys not in NOT_TEXT_PATHS:
                yield path, value
        elif isinstance(value, Mapping):
            stack.extend((inner, (*path, str(key)), (*keys, str(key)))
                         for key, inner in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((item, (*path, _position(item, at)), keys)
                         for at, item in reversed(list(enumerate(value))))


def carries_unread(delta: Mapping[str, Any]) -> bool:
    """Whether a delta carries what no check can read (``NOT_TEXT_PATHS``: audio data): what
    it says is known only from the choice's text as a whole."""
    for path in NOT_TEXT_PATHS:
        value: object = delta
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value:
            return True
    return False


def _position(item: object, at: int) -> int:
    """A list item's place: its ``index`` (a streamed tool call's), else where it is."""
    index = item.get("index") if isinstance(item, Mapping) else None
    return index if type(index) is int else at


def _order(path: TextPath) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, step, "") if isinstance(step, int) else
                 (1, TEXT_ORDER.index(step) if step in TEXT_ORDER else len(TEXT_ORDER), step)
                 for step in path)


def readable_text(message: Mapping[str, Any]) -> str:
    """Every text of a message (or a delta) that reaches the client, and so is checked: every
    string but the labels and ids of ``NOT_TEXT_FIELDS`` and the audio data."""
    text = ChoiceText()
    text.add(message)
    return text.text


def reply_texts(completion: Completion) -> dict[int, str]:
    """The readable text of each choice of a reply, by choice index (the upstream's choices
    are checked where they enter: ``proxy.upstream.entered``)."""
    texts = {int(c.get("index", i)): readable_text(c.get("message") or {})
             for i, c in enumerate(completion.get("choices") or [])}
    return texts or {0: ""}


_BLOCK_PIECES = 256
"""How many of a field's latest pieces (deltas) are kept apart before they are joined into one
block: each character is copied once into its block, and a field of a million one-character
deltas is a few thousand strings, not a million."""


_KEPT_TAIL = 256
"""How many of a field's last characters are kept apart (``_Field.tail``): what a stream reads
at each delta to find a sentence end (``proxy.chunked``) is read without walking the pieces."""


class _Field:
    """One field's text (a stream's deltas to one path), kept in pieces: appending copies
    nothing but its last ``_KEPT_TAIL`` characters, and the whole text is joined only when
    asked (then kept, as one block)."""

    __slots__ = ("_blocks", "_end", "_pieces", "length")

    def __init__(self) -> None:
        self._blocks: list[str] = []  # the earlier pieces, joined
        self._pieces: list[str] = []  # the latest pieces, fewer than ``_BLOCK_PIECES``
        self._end = ""  # the last ``_KEPT_TAIL`` characters
        self.length = 0

    def append(self, text: str) -> None:
        self._pieces.append(text)
        self.length += len(text)
        self._end = (text if len(text) >= _KEPT_TAIL else self._end + text)[-_KEPT_TAIL:]
        if len(self._pieces) >= _BLOCK_PIECES:
            self._blocks.append("".join(self._pieces))
            self._pieces.clear()

    def text(self) -> str:
        if len(self._blocks) + len(self._pieces) > 1:
            self._blocks, self._pieces = ["".join([*self._blocks, *self._pieces])], []
        return (self._blocks or self._pieces or [""])[0]

    def tail(self, chars: int) -> str:
        """At least the last ``chars`` characters (all of them when there are fewer): read
        from the end, as many pieces as that takes."""
        if chars <= _KEPT_TAIL:
            return self._end
        taken: list[str] = []
        size = 0
        for part in chain(reversed(self._pieces), reversed(self._blocks)):
            taken.append(part[-(chars - size):])
            size += len(taken[-1])
            if size >= chars:
                break
        return "".join(reversed(taken))


class ChoiceText:
    """One choice of a streamed reply, its deltas' texts joined field by field into the texts
    its plain reply would carry, so that a stream is checked on exactly the text its plain
    reply would be (a plain message is one delta). Linear in the deltas, however many: each
    field keeps its pieces (``_Field``), joined when a text is asked for (a check), and a
    sentence end is held as each field's length then (``settle``), not as a copy of the text
    (``ChoiceText.add`` copied the whole field at every delta, and chunked mode joined every
    field at each sentence end: 150,000 tiny deltas held the event loop for seconds)."""

    __slots__ = ("_fields", "_moved", "_paths", "_settled", "_text", "length")

    def __init__(self) -> None:
        self._fields: dict[TextPath, _Field] = {}
        self._paths: list[TextPath] = []  # in ``TEXT_ORDER``
        self._text: str | None = ""
        self._settled: dict[TextPath, int] = {}  # each field's length at ``settle``
        self._moved: set[TextPath] = set()  # the fields that grew since
        self.length = 0
        """The characters of every field (without the lines between them)."""

    def add(self, delta: Mapping[str, Any]) -> list[tuple[TextPath, str]]:
        """The delta's texts added, each to its field; returned, with where they sit."""
        added = list(texts_of(delta))
        for path, text in added:
            field = self._fields.get(path)
            if field is None:
                field = self._fields[path] = _Field()
                bisect.insort(self._paths, path, key=_order)
            field.append(text)
            self._moved.add(path)
            self.length += len(text)
            self._text = None
        return added

    def fields(self) -> Iterator[str]:
        """Each field's text so far (a stream's deltas joined per path), in ``TEXT_ORDER``."""
        return (self._fields[path].text() for path in self._paths)

    def tail(self, path: TextPath, chars: int) -> str:
        """At least the last ``chars`` characters of a field (all of it when shorter)."""
        return self._fields[path].tail(chars)

    def settle(self) -> None:
        """Hold the text as it is now: ``settled_text`` is then this text, whatever comes."""
        for path in self._moved:
            self._settled[path] = self._fields[path].length
        self._moved.clear()

    def settled_text(self) -> str:
        """The text as it was at the last ``settle`` ("" before any)."""
        return "\n".join(self._fields[path].text()[:self._settled[path]]
                         for path in self._paths if self._settled.get(path))

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = "\n".join(self._fields[path].text() for path in self._paths)
        return self._text


def by_choice(chunk: Chunk) -> list[tuple[int, Chunk]]:
    """The chunk split into one chunk per choice (a chunk may carry several), by index (its
    place when it has none, as ``proxy.upstream.checked_choices`` reads it)."""
    return [(int(c.get("index", at)), {**chunk, "choices": [c]})
            for at, c in enumerate(chunk.get("choices") or [])]


def delta_of(piece: Chunk) -> ReplyMessage:
    delta = piece["choices"][0].get("delta")
    return delta if isinstance(delta, dict) else {}


def reply_of(chunks: Iterable[Chunk]) -> dict[int, ChoiceText]:
    """Each choice's text in a whole stream."""
    choices: dict[int, ChoiceText] = {}
    for chunk in chunks:
        for index, piece in by_choice(chunk):
            choices.setdefault(index, ChoiceText()).add(delta_of(piece))
    return choices or {0: ChoiceText()}


_SHOWN_COUNT_CHARS = 4096
"""The longest delta whose characters that show are counted exactly on the event loop
(``shown_length``: a regex over non-ASCII text, ~150 ms a megabyte)."""


def _shown_at_least(text: str) -> int:
    """At most ``shown_length(text)``, which the guard counts against ``checks.max_chars``
    (each character that shows is counted alone, so a text's count is the sum of its
    deltas'): exact for ASCII and short deltas, the ASCII characters (all of which show) of
    a longer one."""
    if text.isascii():
        return len(text)
    if len(text) <= _SHOWN_COUNT_CHARS:
        return shown_length(text)
    return len(text.encode("ascii", "ignore"))


def held_within(count: int) -> int:
    """``count`` held chunks, if within ``MAX_HELD_CHUNKS``; else the stream fails (502)."""
    if count > MAX_HELD_CHUNKS:
        raise UpstreamFailed(f"the upstream's stream held more than {MAX_HELD_CHUNKS} chunks "
                             "before they could be sent", code="upstream_too_large")
    return count


async def held_reply(chunks: AsyncIterator[Chunk], max_chars: int,
                     ) -> tuple[list[Chunk], dict[int, ChoiceText]]:
    """A buffered stream's chunks and each choice's text, read as they come (then closed). Read
    only until the text is over ``max_chars`` as the guard counts it (``_shown_at_least`` of
    each delta: a bound below the guard's own count): its check is
    then refused by that size whatever follows (503 ``check_too_large``), so the rest is never
    read; and at most ``MAX_HELD_CHUNKS`` chunks (502)."""
    held: list[Chunk] = []
    choices: dict[int, ChoiceText] = {}
    shown = 0
    try:
        async for chunk in chunks:
            held.append(chunk)
            held_within(len(held))
            for index, piece in by_choice(chunk):
                added = choices.setdefault(index, ChoiceText()).add(delta_of(piece))
                shown += sum(_shown_at_least(text) for _, text in added)
            if shown > max_chars:
                break
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return held, choices or {0: ChoiceText()}


def chunk_like(template: Chunk, delta: ReplyMessage | None,
               finish_reason: str | None = None, index: int = 0) -> Chunk:
    """A chunk with the template's id, model and created; no choices when delta is None."""
    chunk: Chunk = {"id": template.get("id", "chatcmpl-vilmo"), "object": "chat.completion.chunk",
                    "created": template.get("created", 0), "model": template.get("model", "")}
    chunk["choices"] = [] if delta is None else [
        {"index": index, "delta": delta, "finish_reason": finish_reason}]
    return chunk


def refusal_chunks(template: Chunk, text: str, with_role: bool = True,
                   index: int = 0) -> list[Chunk]:
    """A choice that says ``text`` and ends with finish_reason content_filter."""
    delta: ReplyMessage = {"role": "assistant", "content": text} if with_role else {
        "content": text}
    return [chunk_like(template, delta, index=index),
            chunk_like(template, {}, CONTENT_FILTER, index=index)]


def usage_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """The upstream's usage chunk, if any (kept when a reply is refused: the tokens were spent)."""
    return [c for c in chunks if not c.get("choices") and c.get("usage")]


def for_client(chunk: Chunk, wants_usage: bool) -> Chunk | None:
    """The chunk as the client asked for it: without ``usage`` unless it set
    ``stream_options.include_usage`` (the gateway always asks the upstream, to charge tokens);
    None for the usage-only chunk then."""
    if wants_usage or "usage" not in chunk:
        return chunk
    if not chunk.get("choices"):
        return None
    if chunk["usage"] is None:  # OpenAI's null in every chunk: nothing to drop, and the
        return chunk            # chunk keeps the upstream's bytes (``proxy.relay``)
    return cast(Chunk, {k: v for k, v in chunk.items() if k != "usage"})


async def iterate(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    """Already-decided chunks as the async iterator a stream expects."""
    for chunk in chunks:
        yield chunk


def until(deadline: float, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """The stream, ended with ``StreamTimeout`` at ``deadline`` (event-loop time): the router's
    timeout applies per chunk, this one to the whole stream. Closing it closes the upstream,
    also before it was read."""
    return Closing(_until(deadline, chunks), chunks)


async def _until(deadline: float, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamTimeout("the stream ran past streaming.stream_timeout_s",
                                    code="stream_timeout") from None
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
