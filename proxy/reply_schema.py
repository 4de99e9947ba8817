"""The shapes of a reply's ``message`` (a chunk's ``delta``), ``usage`` and Azure's filter
results that the gateway relays: an allow-list of keys, each with the one kind of value it may
hold (forward only what is allow-listed; refuse by default).

The reply check reads every string of a message but its labels and ids
(``proxy.fields.NOT_TEXT_FIELDS``) and its audio data; anything relayed that it does not read
must say nothing. Keys are therefore OpenAI's (``openai.types.chat``: ``ChatCompletionMessage``,
``ChoiceDelta``, ``CompletionUsage``) and a few known providers' (``reasoning_content``,
DeepSeek's and Anthropic's cache counts, Groq's timings), never the upstream's own; under each a
text (read by the check), a number, a flag, a fixed label (``one_of``) or an id (``ID``); every
other key and every value of another kind is dropped. The walk follows the schema, so it is as
deep as the schema and no deeper, whatever the upstream nests.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Final

Keep = Callable[[object], object]
"""A rule: the value as it may be relayed (the same object when it may be as it is), or
``DROP``."""
DROP: Final = object()

MAX_COUNT: Final = 2**53
"""The largest number relayed in ``usage`` (and as an index): a count, not a carrier of text."""
MAX_ITEMS: Final = 64
"""The most items of a list in a message (tool calls, annotations, content parts)."""
MAX_LABEL_ITEMS: Final = 16
"""The most items of a list of labels (Azure's blocklists, ``prompt_filter_results``)."""
ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""An id: at most 64 ASCII letters, digits, ``_`` and ``-`` (``call_abc…``, ``toolu_01…``,
``chatcmpl-tool-<hex>``, ``call_0_<uuid>``, Mistral's nine letters and digits)."""
UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                         r"[0-9a-fA-F]{12}")
_PARTS: Final = re.compile(r"[^_-]+")
ID_PREFIXES: Final = frozenset({"call", "toolu", "chatcmpl", "tool", "audio", "fp", "fc", "msg",
                                "resp", "cmpl", "chat", "gen", "srvtoolu"})
"""Words ids start with that are not counted as the id's words."""
MAX_ID_PARTS: Final = 2
"""The most parts (split at ``_`` and ``-``, a UUID one part, ``ID_PREFIXES`` not counted) of an
id: ``I_will_stab_you`` is a sentence, ``call_0_<uuid>`` two parts."""
MAX_ID_WORD: Final = 12
"""The longest part of an id made of letters only (``IWillStabYouTonight`` is a sentence); at
most one part is."""
AUDIO_DATA: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")
"""Standard base64 (each delta's piece of it): no ``_``, ``-`` or spaces between words."""
ROLES: Final = frozenset({"assistant", "user", "system", "developer", "tool", "function"})
"""The roles a message may have; a reply's message or delta with another has ``assistant``."""
SERVICE_TIERS: Final = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})


def is_id(value: object) -> bool:
    """Whether ``value`` is an id (``ID``) of at most ``MAX_ID_PARTS`` parts, at most one of
    them letters only and that one at most ``MAX_ID_WORD`` long: a word or two at most."""
    return type(value) is str and len(value) <= 64 and _is_id(value)


@functools.lru_cache(maxsize=4096)
def _is_id(value: str) -> bool:
    """``is_id`` of a short string, remembered (a stream's and a deployment's ids repeat)."""
    if not ID.fullmatch(value):
        return False
    parts = words = 0
    for part in _PARTS.findall(UUID.sub("0", value) if len(value) >= 36 else value):
        if part.lower() in ID_PREFIXES:
            continue
        parts += 1
        if part.isalpha():
            words += 1
            if len(part) > MAX_ID_WORD:
                return False
    return parts <= MAX_ID_PARTS and words <= 1


def gateway_id(value: str, prefix: str) -> str:
    """The id relayed for an upstream id that is none (``is_id``): derived from it, so a
    stream's chunks and a client's later turns (which send it back) all carry the same one."""
    return prefix + hashlib.blake2b(value.encode("utf-8", "surrogatepass"),
                                    digest_size=12).hexdigest()


_FRESH_KEY: Final = secrets.token_bytes(16)
"""The key of ``fresh_id``'s hash, this process's own: an upstream cannot choose an id whose
replacement spells something (it could search an unkeyed hash's outputs for words)."""
FRESH_SHAPE_MIN: Final = 8
"""The shortest id part (after its ``ID_PREFIXES``) whose length ``fresh_id`` keeps: a shorter
one (``call_1``, ``call_Go``) has too few replacements to stay unique within a reply."""
_PREFIX: Final = re.compile(r"(?:(?:" + "|".join(sorted(ID_PREFIXES)) + r")[_-])*",
                            re.IGNORECASE)
FRESH_PREFIXES: Final = frozenset({"call_", "call-", "toolu_", "srvtoolu_", "chatcmpl-tool-",
                                   "tool_", "fc_"})
"""The prefixes ``fresh_id`` keeps (OpenAI's, Anthropic's, vLLM's, ...); another becomes the
field's own: an upstream picks one of these few, not a word."""
_FRESH_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
_MISTRAL_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MISTRAL_ID_LENGTH: Final = 9
"""Mistral's tool call ids: nine ASCII letters and digits, checked when sent back to it."""


def fresh_id(prefix: str) -> Keep:
    """A tool call's id made by the gateway in place of the upstream's, whatever it was: an
    id is no text the check reads, and each upstream id may carry a word (``is_id``), so one
    reply's tool calls could spell a sentence (``call_Go``, ``call_stab``, ``call_him``...).
    The same upstream id gets the same id in this process (a stream's chunks that repeat it).
    Of the upstream's id only its length and its prefix, when one of ``FRESH_PREFIXES`` (else
    ``prefix``), are kept; every other character is drawn from a keyed hash (lower-case letters
    and digits, one digit at least), so neither case nor digits nor words carry anything the
    upstream chose. A Mistral id (nine letters and digits, which Mistral checks when sent back)
    gets nine letters and digits. A shorter id, or one that is none, becomes ``prefix`` and 24
    hexadecimal digits. The upstream never needs its own ids back: the client's next request
    carries the whole conversation, the gateway's ids in its assistant and tool messages
    alike."""
    def keep(value: object) -> object:
        if value is None or value == "":
            return value
        if type(value) is not str:
            return DROP
        return _remembered(value, prefix) if len(value) <= 64 else _fresh(value, prefix)
    return keep


@functools.lru_cache(maxsize=4096)
def _remembered(value: str, prefix: str) -> str:
    """``_fresh`` of a short string (an id's length at most), remembered: a stream's chunks
    may repeat an id, and ``fields`` asks its rule twice for a value it changes."""
    return _fresh(value, prefix)


def _fresh(value: str, prefix: str) -> str:
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), key=_FRESH_KEY,
                             digest_size=64).digest()
    if not is_id(value):
        return prefix + digest[:12].hex()
    if len(value) == MISTRAL_ID_LENGTH and value.isalnum():
        return "".join(_MISTRAL_ALPHABET[draw % len(_MISTRAL_ALPHABET)]
                       for draw in digest[:MISTRAL_ID_LENGTH])
    start = _PREFIX.match(value).end()  # type: ignore[union-attr]  # it matches "" at least
    if len(value) - start < FRESH_SHAPE_MIN:
        return prefix + digest[:12].hex()
    kept = value[:start].lower()
    kept = kept if kept in FRESH_PREFIXES else prefix
    body = [_FRESH_ALPHABET[draw % len(_FRESH_ALPHABET)]
            for draw in digest[:max(len(value) - len(kept), FRESH_SHAPE_MIN)]]
    if not any(char.isdigit() for char in body):  # a part of letters only may be a word
        body[digest[-1] % len(body)] = str(digest[-2] % 10)
    return kept + "".join(body)


def text(value: object) -> object:
    """A text: read by the check, relayed as it is."""
    return value if value is None or type(value) is str else DROP


def count(value: object) -> object:
    """A number of ``usage`` (or an index): an int or float from 0 to ``MAX_COUNT``."""
    if value is None or ((type(value) is int or type(value) is float)
                         and 0 <= value <= MAX_COUNT):
        return value
    return DROP


def whole(value: object) -> object:
    """An index or a time: an int from 0 to ``MAX_COUNT``."""
    return value if value is None or (type(value) is int and 0 <= value <= MAX_COUNT) else DROP


def flag(value: object) -> object:
    return value if value is None or type(value) is bool else DROP


def one_of(*labels: str) -> Keep:
    """A label from a fixed set (``type``, ``severity``)."""
    allowed = frozenset(labels)

    def keep(value: object) -> object:
        return value if value is None or (type(value) is str and value in allowed) else DROP
    return keep


def an_id(prefix: str | None) -> Keep:
    """An id (``is_id``); one that is none is replaced by ``gateway_id`` (``prefix``), or
    dropped when ``prefix`` is None."""
    def keep(value: object) -> object:
        if value is None or is_id(value):
            return value
        return gateway_id(value, prefix) if prefix is not None and type(value) is str else DROP
    return keep


def audio_data(value: object) -> object:
    return value if value is None or (type(value) is str and AUDIO_DATA.fullmatch(value)
                                      ) else DROP


def role(value: object) -> object:
    return value if value is None or (type(value) is str and value in ROLES) else "assistant"


def fields(schema: Mapping[str, Keep]) -> Keep:
    """An object with only the keys of ``schema``, each value as its rule keeps it."""
    def keep(value: object) -> object:
        if value is None:
            return None
        if type(value) is not dict:
            return DROP
        for key, inner in value.items():  # the common case: kept as it is, without a copy
            rule = schema.get(key)
            if rule is None or rule(inner) is not inner:
                break
        else:
            return value
        kept: dict[str, object] = {}
        for key, inner in value.items():
            rule = schema.get(key)
            new = DROP if rule is None else rule(inner)
            if new is not DROP:
                kept[key] = new
        return kept
    return keep


def items(rule: Keep, most: int) -> Keep:
    """A list of at most ``most`` items, each as ``rule`` keeps it (those it drops left out)."""
    def keep(value: object) -> object:
        if value is None:
            return None
        if type(value) is not list:
            return DROP
        kept = [rule(inner) for inner in value[:most]]
        if len(value) <= most and all(new is old for new, old in zip(kept, value, strict=True)):
            return value
        return [new for new in kept if new is not DROP]
    return keep


def either(first: Keep, second: Keep) -> Keep:
    """The first rule that keeps the value (a text, or a list of parts)."""
    def keep(value: object) -> object:
        new = first(value)
        return new if new is not DROP else second(value)
    return keep


_TEXT_PART = fields({"type": one_of("text"), "text": text})
_CONTENT_PART = fields({"type": one_of("text", "refusal", "thinking", "reasoning"),
                        "text": text, "refusal": text,
                        "thinking": either(text, items(_TEXT_PART, MAX_ITEMS))})
_NAMED_TEXT = fields({"name": text, "arguments": text})
TOOL_CALL = fields({"index": whole, "id": fresh_id("call_"), "type": one_of("function", "custom"),
                    "function": _NAMED_TEXT, "custom": fields({"name": text, "input": text})})
MESSAGE = fields({
    "role": role,
    "content": either(text, items(_CONTENT_PART, MAX_ITEMS)),
    "refusal": text, "reasoning_content": text, "reasoning": text,
    "tool_calls": items(TOOL_CALL, MAX_ITEMS),
    "function_call": _NAMED_TEXT,
    "audio": fields({"id": an_id("audio_"), "data": audio_data, "expires_at": whole,
                     "transcript": text}),
    "annotations": items(fields({"type": one_of("url_citation"), "url_citation": fields({
        "start_index": whole, "end_index": whole, "title": text, "url": text})}), MAX_ITEMS),
})
"""A reply's ``message`` or a chunk's ``delta``: OpenAI's keys, ``reasoning_content``
(DeepSeek, vLLM) and ``reasoning`` (OpenRouter, Ollama), and content as a list of text
parts (Mistral's reasoning models)."""

_PROMPT_DETAILS = ("cached_tokens", "audio_tokens", "text_tokens", "image_tokens",
                   "cache_write_tokens", "cache_creation_tokens")
_COMPLETION_DETAILS = ("reasoning_tokens", "audio_tokens", "accepted_prediction_tokens",
                       "rejected_prediction_tokens", "text_tokens", "image_tokens")
USAGE = fields({
    **dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens",
                     "prompt_cache_hit_tokens", "prompt_cache_miss_tokens",
                     "cache_creation_input_tokens", "cache_read_input_tokens",
                     "reasoning_tokens", "queue_time", "prompt_time", "completion_time",
                     "total_time", "cost"), count),
    "prompt_tokens_details": fields(dict.fromkeys(_PROMPT_DETAILS, count)),
    "completion_tokens_details": fields(dict.fromkeys(_COMPLETION_DETAILS, count)),
    "server_tool_use": fields({"web_search_requests": count}),
})
"""``usage``: OpenAI's counts, DeepSeek's cache hits and misses, Anthropic's cache reads and
writes (as LiteLLM relays them), Groq's timings, OpenRouter's ``cost``; numbers only."""

_SEVERITY = fields({"filtered": flag, "severity": one_of("safe", "low", "medium", "high")})
_DETECTED = fields({"filtered": flag, "detected": flag})
_BLOCKLIST = fields({"filtered": flag, "id": an_id(None)})
CONTENT_FILTER = fields({
    **dict.fromkeys(("hate", "self_harm", "sexual", "violence"), _SEVERITY),
    **dict.fromkeys(("jailbreak", "indirect_attack", "profanity", "protected_material_text",
                     "protected_material_code"), _DETECTED),
    "custom_blocklists": either(items(_BLOCKLIST, MAX_LABEL_ITEMS), fields({
        "filtered": flag, "details": items(_BLOCKLIST, MAX_LABEL_ITEMS)})),
    "error": fields({"code": an_id(None)}),
})
"""Azure's ``content_filter_results``: its categories, each a flag and a severity or a
detection, and the ids of custom blocklists; an error's message and a citation are dropped."""
PROMPT_FILTER = items(fields({"prompt_index": whole, "content_filter_results": CONTENT_FILTER}),
                      MAX_LABEL_ITEMS)
"""Azure's ``prompt_filter_results``."""


def stop_reason(value: object) -> object:
    """vLLM's ``stop_reason``: the token id (a number) or stop string that ended the choice,
    relayed when it is an id-shaped word (``is_id``)."""
    return value if whole(value) is value or is_id(value) else DROP
