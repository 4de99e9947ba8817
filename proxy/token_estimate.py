"""What a request's tokens are estimated at before the upstream counts them: the bound a key's
``tpm`` holds at admission (``proxy.client_keys``) and charges a call that ended without usage
(``proxy.stages``). It must not be gamed: it counted words before, so one 200,000-character
word was one token (and an image none) while the upstream billed 50,000.

A byte-level BPE token (OpenAI's cl100k and o200k) is at least one byte. Measured with both on
3.3 MB of English from the shared data (dialogues, posts, arguments, jailbreak prompts), a token
is 4.3-5.2 UTF-8 bytes, and on random text as little as 1.1 (random non-ASCII characters).
``text_tokens`` counts, per text, the larger of

* its pieces (``_PIECE``: runs of up to six letters, a capital and lowercase, up to three
  digits, each punctuation mark, each whitespace character other than a lone space, each run
  of spaces), plus one token for every UTF-8 byte past the first of a non-ASCII character; and
* its UTF-8 bytes / 4 (``BYTES_PER_TOKEN``).

Measured as the estimate over the larger of the two tokenizers' counts: English 1.14-1.32
(estimates stay near the bill), German, French 0.85-1.08, code 1.2-1.3, JSON 1.58, Russian,
Chinese, Japanese, Arabic 1.2-2.1 (over: their characters take 2-3 bytes); the least of random base64
0.77, hex 0.96, printable ASCII 1.03, CJK 0.85, emoji 1.03, characters U+0100-2FFF 0.72, one
long word 2.0, and random single-case letters, the worst found, 0.42. So a client that shapes
its text can spend at most about 2.4 times its ``tpm`` (it was unbounded), and what it really
spent is charged when its request settles. The measurement: ``bench/tokens_estimate.py``.

Every forwarded field is counted but the messages' media and ``NON_TEXT_FIELDS`` (numbers,
flags, keywords, token ids, validated as such): the others as their JSON, so a field the
upstream reads beside the messages (``response_format``'s schema, ``prediction``, a model's
``allowed_params``, one added later) is not free (100,000 tokens of schema passed a
``tpm: 1000`` key). Of a message, the fields the protocol validates (``role``, ``name``,
``tool_call_id``, a part's ``type``, ``text``, ``refusal``) are counted by their strings. The
rest is free-form (its tool calls, a part's ``input_audio`` but its data, any undeclared
field: ``Sent.free_form``) and forwarded whole, so it costs the larger of two counts: its
strings, its keys but the protocol's (``KNOWN_KEYS``), and its numbers, flags and nulls
(``_free_form_tokens``); and its JSON's UTF-8 bytes / 4, which no shape escapes (empty lists,
nulls, the protocol's own keys). A tool call of 400 keys shaped like labels
(``Ignore_all_previous_instructions_..._000``, 24,889 characters) was estimated at 5 tokens,
and with 20,000 numbers (184,900 characters) still at 5: now at 8,405 and 68,407.

Media parts cost what their decoded data (base64 × 3/4) bounds (their bytes are not text): an
image ``IMAGE_TOKENS`` (the most a high-detail image costs on GPT-4o: 85 + 8 tiles of 170), or
``IMAGE_LOW_TOKENS`` with ``detail: low``; audio its longest duration, at 1,000 bytes a second
(8 kbps, the lowest MP3 bitrate; WAV is 16,000 and more) and 10 tokens a second (GPT-4o), so
decoded bytes / ``AUDIO_BYTES_PER_TOKEN``, at least ``AUDIO_MIN_TOKENS`` and at most
``AUDIO_MAX_TOKENS``; a file its decoded bytes / 4, at least ``MEDIA_TOKENS`` (a file by id:
``MEDIA_TOKENS``). Audio was priced at its base64 / 4: a 10 s WAV at 106,786 tokens (billed
about 100), refused on a ``tpm: 50000`` key. What a call really used is charged at settle.
O(n) over the request's strings and values, in ``CHUNK_CHARS`` pieces, so a worker thread that counts a
large body lets the event loop run between them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.fields import NOT_TEXT_FIELDS
from proxy.off_loop import OFF_LOOP_CHARS, off_loop_past
from proxy.protocol import PART_FIELDS, ChatMessageIn, ContentPart, FileRef, ImageURL
from proxy.reply_schema import is_id

BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1445
IMAGE_LOW_TOKENS = 85
MEDIA_TOKENS = 1445
AUDIO_BYTES_PER_TOKEN = 100
"""1,000 bytes a second at the least, 10 tokens a second (see the module's docstring)."""
AUDIO_MIN_TOKENS = 100
AUDIO_MAX_TOKENS = 36_000
"""An hour at 10 tokens a second: a large WAV (a raised ``server.max_body_bytes``) is not
refused as never fitting for its bytes alone."""
TOOL_FIELDS = ("tools", "functions")
"""Request fields whose definitions the upstream reads with the prompt (and bills)."""
NON_TEXT_FIELDS = frozenset({
    "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "modalities", "n", "parallel_tool_calls", "presence_penalty",
    "reasoning_effort", "seed", "service_tier", "store", "stream", "stream_options",
    "temperature", "top_logprobs", "top_p", *TOOL_FIELDS,
})
"""Forwarded fields not counted as JSON: the messages and tools (counted apart), and fields
``protocol.ChatCompletionRequest`` holds to numbers, flags, short keywords or token ids
(``logit_bias``), which the upstream does not read as text; and ``stream_options``, which the
upstream reads as options, never as the model's text (the gateway adds ``include_usage`` to
every streamed call, and as JSON it counted 19 tokens, which left a streamed regeneration no
room in a small key's window). Every other field is counted."""
CHUNK_CHARS = 16_384
"""A text is counted this many characters at a time: one regex call holds the GIL (and so a
worker thread the event loop) for at most a few milliseconds."""
_PIECE = re.compile(r"[A-Z]?[a-z]{1,6}|[A-Z]{1,6}|[0-9]{1,3}|[!-/:-@\[-`{-~]|[^\S ]| {2,16}")
_MEDIA = {"image_url", "input_audio", "file"}
LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A label: a type (``image_url``, ``function``), a role, a field's name."""
MESSAGE_FIELDS = frozenset(ChatMessageIn.model_fields) - {"content", "tool_calls"}
"""A message's fields the protocol validates as strings (``role``, ``name``, ``tool_call_id``),
counted by their strings; every other one but ``content`` is free-form (``Sent.free_form``)."""
TOOL_CALL_KEYS = ("id", "type", "index", "function", "custom", "name", "arguments", "input")
KNOWN_KEYS = frozenset({*ChatMessageIn.model_fields, *ContentPart.model_fields, *PART_FIELDS,
                        *ImageURL.model_fields, *FileRef.model_fields, *TOOL_CALL_KEYS,
                        "function_call", "refusal", "audio", "data", "format"})
"""The protocol's field names (of a message, a content part, a tool or function call, a part's
media): the only keys of a free-form value not counted; any other key is the client's text,
forwarded (the input check's ``proxy.inputs._is_key_label`` lets keys of three words pass
unread; here no key the client names is free: 400 keys of three words are 2,000 tokens)."""
MEDIA_DATA = frozenset({"data", "file_data", "url"})
"""A media field's data, priced as media (``media_tokens``), not as text."""


def text_tokens(text: str) -> int:
    """The estimate of one text (see the module's docstring)."""
    if not text:
        return 0
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    pieces = sum(len(_PIECE.findall(text, start, start + CHUNK_CHARS))
                 for start in range(0, len(text), CHUNK_CHARS))
    return max(pieces + size - len(text), -(-size // BYTES_PER_TOKEN))


def least_tokens(text: str) -> int:
    """A lower bound of ``text_tokens`` in O(1): its characters / 4."""
    return -(-len(text) // BYTES_PER_TOKEN)


def media_tokens(part: Mapping[str, Any]) -> int:
    """The fixed cost of an image, audio or file content part (0 for any other part)."""
    kind = part.get("type")
    if kind == "image_url":
        image = part.get("image_url")
        low = isinstance(image, Mapping) and image.get("detail") == "low"
        return IMAGE_LOW_TOKENS if low else IMAGE_TOKENS
    if kind in ("input_audio", "file"):
        inner = part.get(kind)
        data = (inner.get("data") or inner.get("file_data")) if isinstance(inner, Mapping) else None
        size = len(data) * 3 // 4 if isinstance(data, str) else 0  # decoded from base64
        if kind == "input_audio":
            return min(AUDIO_MAX_TOKENS,
                       max(AUDIO_MIN_TOKENS, -(-size // AUDIO_BYTES_PER_TOKEN)))
        return max(MEDIA_TOKENS, -(-size // BYTES_PER_TOKEN))
    return 0


@dataclass(slots=True)
class Sent:
    """What the upstream reads of a request (``sent``)."""

    texts: list[str] = field(default_factory=list)
    """Counted by ``text_tokens``."""
    free_form: list[tuple[object, int]] = field(default_factory=list)
    """Values forwarded whole (a message's or a part's fields beyond the validated ones), each with its JSON's UTF-8 bytes."""
    media: int = 0
    """The media parts' cost."""


def sent(params: Any) -> Sent:
    """What the upstream reads of a request: the strings of the messages' validated fields but
    the labels and ids that are ids (``sent_strings``), their free-form values
    (``free_form``), the tool definitions and every other field but ``NON_TEXT_FIELDS`` as
    JSON, and the media parts' cost."""
    found = Sent()
    if not isinstance(params, dict):
        return found
    for message in params.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            found.texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    _part(part, found)
                else:
                    found.texts.extend(sent_strings(part))
        found.texts.extend(sent_strings({k: v for k, v in message.items()
                                         if k in MESSAGE_FIELDS}))
        calls = message.get("tool_calls")
        rest = {k: v for k, v in message.items()
                if k not in MESSAGE_FIELDS and k not in ("content", "tool_calls")}
        if calls:
            rest["tool_calls"] = [_without_ids(call) for call in calls] \
                if isinstance(calls, list) else calls
        _free_form(rest, found)
    tools = [params[name] for name in TOOL_FIELDS if params.get(name)]
    if tools:
        found.texts.append(json.dumps(tools, ensure_ascii=False))
    rest = {k: v for k, v in params.items() if k not in NON_TEXT_FIELDS}
    if rest:
        found.texts.append(json.dumps(rest, ensure_ascii=False, default=str))
    return found


def _part(part: dict[str, Any], found: Sent) -> None:
    """A content part: its validated fields' strings (its media field as media), the rest
    (and an audio part's ``input_audio`` but its data) free-form."""
    kind = part.get("type")
    media = kind in _MEDIA
    validated = {"type", "text", "image_url", "file", kind}
    if media:
        found.media += media_tokens(part)
        inner = part.get("input_audio")
        if kind == "input_audio" and isinstance(inner, dict):
            _free_form({k: v for k, v in inner.items() if k not in MEDIA_DATA}, found)
    found.texts.extend(sent_strings({k: v for k, v in part.items()
                                     if k in validated and not (media and k == kind)}))
    _free_form({k: v for k, v in part.items() if k not in validated}, found)


def _without_ids(call: object) -> object:
    """A tool call without its ``id``, ``type`` and ``index`` where they are ids, labels
    (``_free``) or numbers: an id costs nothing, whatever its length
    (``tests/proxy/test_tool_call_ids``)."""
    if not isinstance(call, dict):
        return call
    return {k: v for k, v in call.items() if not (k in NOT_TEXT_FIELDS and (
        isinstance(v, str) and _free(v) or type(v) is int))}


def _free_form(value: dict[str, Any], found: Sent) -> None:
    """Keep a free-form value with its JSON's UTF-8 bytes (nothing, when it is empty)."""
    if value:
        text = json.dumps(value, ensure_ascii=False, default=str)
        found.free_form.append((value, len(text) if text.isascii() else
                                len(text.encode("utf-8", "surrogatepass"))))


def _free_form_tokens(value: object) -> int:
    """The estimate of a free-form value's parts: every string, every key but ``KNOWN_KEYS``,
    and each number, flag or null as its JSON text and the comma that separates it. Iterative,
    so nesting cannot exhaust the stack; linear in the value's size."""
    tokens = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is int:  # its digits three to a token (as ``_PIECE``), its sign, a comma
            digits = len(str(item))
            tokens += -(-digits // 3) + 1 if item >= 0 else -(-(digits - 1) // 3) + 2
        elif type(item) is str:
            tokens += text_tokens(item)
        elif type(item) is list:
            stack.extend(item)
        elif isinstance(item, Mapping):
            for name, inner in item.items():
                if name not in KNOWN_KEYS:
                    tokens += text_tokens(str(name))
                stack.append(inner)
        elif item is None or type(item) is bool:
            tokens += 2
        else:  # a float, or a value built in code
            tokens += text_tokens(str(item)) + 1
    return tokens


def _free(label: str) -> bool:
    """Whether a key, or a string under ``NOT_TEXT_FIELDS``, is a label or an id, not counted:
    an id (``proxy.reply_schema.is_id``, as the input check tells them: ``proxy.inputs``) or
    a ``LABEL`` (``image_url``, ``json_schema``): at most 64 characters either way."""
    return is_id(label) or LABEL.fullmatch(label) is not None


def sent_strings(value: object) -> Iterator[str]:
    """Every string of ``value`` (a message's or a content part's validated fields, whose keys
    are the protocol's: free-form ones are ``_free_form_tokens``'s) the upstream gets, keys
    included, but the labels and ids (``_free``) among the keys and ``NOT_TEXT_FIELDS``.
    ``proxy.chunks.texts_of`` skips every string there, which is right for a reply (whose ids
    are made ids where it enters) but not for a request: 38,400 characters of words in a
    ``tool_call_id`` and a tool call's ``id`` were forwarded on a ``tpm: 1000`` key, uncounted.
    Iterative: a client's nesting cannot exhaust the stack."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, key = stack.pop()
        if isinstance(item, str):
            if item and not (key in NOT_TEXT_FIELDS and _free(item)):
                yield item
        elif isinstance(item, Mapping):
            for name, inner in item.items():
                if isinstance(name, str) and not _free(name):
                    yield name
                stack.append((inner, str(name)))
        elif isinstance(item, list):
            stack.extend((inner, key) for inner in item)


def estimated_tokens(params: Any, replies: Iterable[str] = (), found: Sent | None = None,
                     ) -> int:
    """The tokens of a call: what was sent (``sent``: a free-form value the larger of its parts'
    estimate and its JSON's bytes / 4) and the text the upstream produced (every choice,
    relayed to the client or not). ``found``: ``sent(params)`` when it was read already
    (``LeastBound``)."""
    if found is None:
        found = sent(params)
    free_form = sum(max(_free_form_tokens(value), -(-size // BYTES_PER_TOKEN))
                    for value, size in found.free_form)
    return (found.media + sum(map(text_tokens, found.texts)) + free_form
            + sum(map(text_tokens, replies)))


@dataclass(frozen=True, slots=True)
class LeastBound:
    """``least_bound``: a lower bound of a request's estimate, and what was read to count it,
    so that its full estimate (``estimate``) does not read the request again (admission read
    it twice: ``sent`` for the bound, then again for the estimate)."""

    params: Any
    tokens: int
    """At most ``estimated_tokens(params)``."""
    chars: int
    """The characters the full estimate counts (past ``OFF_LOOP_CHARS``: a worker thread)."""
    found: Sent | None
    """``sent(params)``, or None when the bound read only the messages' contents (a body past
    ``OFF_LOOP_CHARS``)."""

    async def estimate(self) -> int:
        """``estimated_tokens(params)``, in a worker thread past ``OFF_LOOP_CHARS``
        characters."""
        return await off_loop_past(self.chars, OFF_LOOP_CHARS, estimated_tokens, self.params,
                                   (), self.found)


def least_estimate(params: Any) -> tuple[int, int]:
    """``least_bound``'s tokens and characters."""
    bound = least_bound(params)
    return bound.tokens, bound.chars


def least_bound(params: Any) -> LeastBound:
    """A lower bound of ``estimated_tokens(params)``, and the characters it would count, with
    at most about ``OFF_LOOP_CHARS`` of work: it runs on the event loop (admission,
    regeneration, a charge), where serialising a 4 MB body's free-form values (300,000 keys)
    held it 0.25-0.55 s. A body whose JSON is past ``OFF_LOOP_CHARS`` (``_json_chars_past``)
    is bound by its messages' text contents alone, read up to that many characters; its
    characters are then reported past the limit, so the full estimate runs off the loop."""
    chars = _json_chars_past(params, OFF_LOOP_CHARS)
    if chars > OFF_LOOP_CHARS:
        return LeastBound(params, _least_of_contents(params, OFF_LOOP_CHARS), chars, None)
    found = sent(params)
    sizes = [size for _, size in found.free_form]
    return LeastBound(params,
                      found.media + sum(map(least_tokens, found.texts))
                      + sum(-(-size // BYTES_PER_TOKEN) for size in sizes),
                      sum(map(len, found.texts)) + sum(sizes), found)


def _json_chars_past(value: object, limit: int) -> int:
    """A lower bound of ``value``'s JSON characters (a string its length and quotes, any other
    value or separator one), walked only until it passes ``limit``: O(limit) steps at most."""
    chars = 0
    stack = [value]
    while stack and chars <= limit:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item) + 2
        elif isinstance(item, Mapping):
            chars += 2
            for name, inner in item.items():
                chars += len(name) + 4 if isinstance(name, str) else 4
                stack.append(inner)
                if chars > limit:
                    break
        elif isinstance(item, list):
            chars += 2 + len(item)
            stack.extend(item[:limit])
        else:
            chars += 1
    return chars


def _least_of_contents(params: Any, limit: int) -> int:
    """Each message's text ``content`` over 4 (``least_tokens``; ``text_tokens`` counts at
    least that of it), for at most ``limit`` messages: a part of the estimate, so below it."""
    messages = params.get("messages") if isinstance(params, dict) else None
    if not isinstance(messages, list):
        return 0
    return sum(least_tokens(message["content"]) for message in messages[:limit]
               if isinstance(message, dict) and isinstance(message.get("content"), str))


async def prompt_estimate(params: Any, limit: int) -> int:
    """``estimated_tokens(params)`` when its lower bound (``least_bound``) is within
    ``limit`` (a key's ``tpm``), else that bound: past the limit, the request is refused
    whatever the rest counts, and the full count is not worth its time."""
    bound = least_bound(params)
    return await bound.estimate() if bound.tokens <= limit else bound.tokens
