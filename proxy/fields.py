"""The fields of an upstream's reply or stream chunk that the gateway relays: an allow-list
(forward only what is allow-listed; refuse by default).

The reply check reads every string of each choice's ``message`` or ``delta``
(``proxy.chunks.texts_of``) but the labels and ids there (``NOT_TEXT_FIELDS``); anything else
reached the client unread, so an upstream (or a model behind one) could put the words a policy
blocks in a choice's ``text``, a top-level ``extra``, the ``top_logprobs`` alternatives, the
reply's ``id`` or ``model``, a ``finish_reason``, the logprobs' tokens, the keys of ``usage``,
or a message's ``role`` or a tool call's ``id``, and they went out in plain replies and in
buffer and chunked streams alike. Here, where a reply enters (``proxy.upstream.entered``, on
both upstream paths), everything relayed becomes either text the check reads or a bounded
label (``LABEL``):

- unknown fields are removed;
- ``id``, ``model``, ``system_fingerprint`` and ``service_tier`` are labels (else replaced:
  ``FALLBACK_ID``, the requested model name; or removed), ``object`` is the right one,
  ``created`` a number; a stream's are its first chunk's throughout (``StreamLabels``: no
  sentence spelled one chunk's id at a time);
- a ``finish_reason`` is one of ``FINISH_REASONS`` (others mapped, as LiteLLM maps them);
- inside the message or delta, the strings the check skips are labels: a role one of
  ``ROLES``, ids and types labels, audio data base64 (others removed); keys outside
  ``KNOWN_KEYS`` labels, at most ``MAX_UNKNOWN_KEYS`` distinct ones;
- ``usage`` holds numbers under label keys; the label fields (``LABEL_FIELDS``) labels under
  label keys, at most ``MAX_LABELS`` of them, lists of at most ``MAX_LIST``;
- ``logprobs`` are relayed only when their tokens spell the checked ``content`` (``refusal``)
  of the same message or delta, with every ``top_logprobs`` emptied (alternatives that were
  not the reply, so never checked), keeping the shape a client expects; unless no check of the
  reply can stop it (``proxy.logprobs.alternatives_shown``): then they are relayed, bounded.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

from proxy.logprobs import alternatives_shown, kept_logprobs

REPLY_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage",
                          "system_fingerprint", "service_tier", "prompt_filter_results"})
"""The top-level fields of a reply or chunk that are relayed: OpenAI's, and Azure's
``prompt_filter_results`` (in chunks without choices held before the first with one:
``proxy.upstream.open_stream``), kept as labels only (``LABEL_FIELDS``). Nothing here is text
of the reply; every other field is dropped."""
CHOICE_FIELDS = frozenset({"index", "finish_reason", "logprobs", "stop_reason",
                           "content_filter_results"})
"""The fields of a choice that are relayed besides its ``message`` (a reply's) or ``delta`` (a
chunk's), which is kept whole (every string in it is checked but ``NOT_TEXT_FIELDS``, which are
labels here): OpenAI's, vLLM's ``stop_reason`` (the stop string or token id that ended the
choice) and Azure's ``content_filter_results``, both labels only (``LABEL_FIELDS``). Every
other field is dropped."""
LABEL_FIELDS = frozenset({"prompt_filter_results", "content_filter_results", "stop_reason"})
"""Fields whose values are labels (flags, severities, ids, numbers): each string in them that
is not a label (``LABEL``), such as an error message or a citation, is dropped, and so is each
object key that is not one, and every string in a list (a list of words is a sentence; the
labels' lists hold objects: Azure's ``prompt_filter_results``, blocklist ``details``); past
``MAX_LABELS`` strings and keys, or ``MAX_LIST`` items of a list, the rest is dropped: no text
of any length passes unchecked."""
LABEL: Final = re.compile(r"[A-Za-z0-9_.:/@+=-]{0,128}")
"""A label: one word of at most 128 ASCII letters, digits and ``_.:/@+=-`` (``safe``,
``chatcmpl-9x…``, ``fp_44709d6fcb``, ``call_abc``, ``meta-llama/Llama-3.1-8B``,
``claude-3-5-sonnet@20240620``, a base64 id); no spaces, so no sentence."""
MAX_LABELS = 48
"""The most strings and keys one label field (or ``usage``) relays: Azure's
``content_filter_results`` has about 40 (each one word the check never reads: 128 could
spell a paragraph)."""
MAX_UNKNOWN_KEYS = 8
"""The most distinct keys outside ``KNOWN_KEYS`` one message or delta relays (the rest are
dropped with their values): each is a word the check never reads."""
MAX_LIST = 16
"""The most items of a list in a label field."""
MAX_DEPTH = 6
"""How deep ``usage`` and the label fields are read; deeper values are dropped."""
FALLBACK_ID = "chatcmpl-vilmo"
"""A reply's or stream's ``id`` when the upstream's is not a label."""
OBJECTS = {"message": "chat.completion", "delta": "chat.completion.chunk"}
"""A reply's and a chunk's ``object`` (Azure's held chunks send ``""``, also kept)."""
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
"""OpenAI's finish reasons, relayed as they come (and null)."""
FINISH_SYNONYMS = {"eos": "stop", "eos_token": "stop", "stop_sequence": "stop",
                   "end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
"""Other servers' names for them; any other string is ``"stop"`` (as LiteLLM's Router makes
it: the choice ended, and why is not the upstream's text to relay)."""
NOT_TEXT_FIELDS = frozenset({"role", "id", "type", "index", "tool_call_id"})
"""Fields of a message or delta, at any depth, whose strings are labels or ids the upstream
sets, never words of the reply: the check skips them (``proxy.chunks.texts_of``), so here each
such string must be a label (a ``role`` one of ``ROLES``), or it is removed."""
NOT_TEXT_PATHS = frozenset({("audio", "data")})
"""Paths (keys only, without list positions) of strings that are not text: the base64 audio
of an audio reply (its words are in ``audio.transcript``, which is checked); one that is not
base64 (``BASE64``) is removed."""
ROLES = frozenset({"assistant", "user", "system", "developer", "tool", "function"})
"""The roles a message may have; a reply's message or delta with another has ``assistant``."""
BASE64: Final = re.compile(r"[A-Za-z0-9+/=_-]*")
TOP_LABELS = ("id", "model", "system_fingerprint", "service_tier")
"""The top-level fields that are labels (and a stream's first chunk's throughout)."""
USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
                        "audio_tokens", "reasoning_tokens", "accepted_prediction_tokens",
                        "rejected_prediction_tokens", "prompt_tokens_details",
                        "completion_tokens_details"})
"""OpenAI's ``usage`` keys, known to be labels (others are checked to be: ``LABEL``)."""
TEXT_KEYS = frozenset({"content", "refusal", "reasoning_content", "reasoning"})
"""Keys of a message or delta whose strings are its text (read by the check)."""
KNOWN_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call", "audio",
                        "annotations", "reasoning_content", "reasoning", "name", "arguments",
                        "id", "type", "index", "function", "data", "transcript", "expires_at",
                        "input", "custom", "tool_call_id", "url_citation", "start_index",
                        "end_index", "title", "url"})
"""Keys of a message or delta known to be labels (others are checked to be: ``LABEL``)."""

_DROP: Final = object()
_NUMBERS = (int, float, bool)
_CHOICE_FIELDS_WITH = {part: CHOICE_FIELDS | {part} for part in ("message", "delta")}


class StreamLabels:
    """The labels of one stream (``TOP_LABELS`` and ``created``): each the first chunk's that
    has it, so that later chunks carrying others (a sentence spelled one chunk at a time) are
    given these. Empty values (Azure's held chunks have ``""`` and ``0``) are left alone."""

    __slots__ = ("alternatives", "held", "last")

    def __init__(self) -> None:
        self.alternatives = alternatives_shown.get()
        """The stream's ``top_logprobs`` shown or not: as its call's context said at its start
        (later chunks may be read in another task)."""
        self.held: dict[str, object] = {}
        self.last: tuple[object, ...] | None = None
        """The labels of the chunk before, as it was relayed: a chunk with the same needs no
        look."""


def keep_allowed(reply: dict[str, Any], part: str, model: str = "",
                 stream: StreamLabels | None = None) -> bool:
    """Remove from a reply (``part="message"``) or chunk (``"delta"``), in place, every field
    that is not allow-listed and every label that is not one, as described above; True when
    something was removed or changed. ``model`` is the requested model (a ``model`` that is
    not a label is replaced by it); ``stream`` holds a stream's labels across its chunks. Its
    choices must be well formed already (``proxy.upstream.checked_choices``)."""
    changed = False
    if not REPLY_FIELDS.issuperset(reply):
        for key in [k for k in reply if k not in REPLY_FIELDS]:
            del reply[key]
        changed = True
    changed = _keep_top_labels(reply, part, model, stream) or changed
    if "usage" in reply and (usage := _numbers(reply["usage"], 0, [MAX_LABELS])
                             ) is not reply["usage"]:
        changed = True
        if usage is _DROP:
            del reply["usage"]
        else:
            reply["usage"] = usage
    if "prompt_filter_results" in reply:
        changed = _keep_labels(reply, "prompt_filter_results") or changed
    shown = stream.alternatives if stream is not None else alternatives_shown.get()
    for choice in reply.get("choices") or ():
        changed = _keep_allowed_in_choice(choice, part, shown) or changed
    return changed


def _keep_top_labels(reply: dict[str, Any], part: str, model: str,
                     stream: StreamLabels | None) -> bool:
    """``TOP_LABELS`` as labels, ``object`` and ``created`` as they must be, and a stream's
    all as its first chunk's; True when changed."""
    if stream is not None:
        if _top_labels(reply) == stream.last:
            return False  # as the chunk before, already made so (the common case)
        changed = _keep_top_labels_once(reply, part, model, stream.held)
        stream.last = _top_labels(reply)
        return changed
    return _keep_top_labels_once(reply, part, model, None)


def _top_labels(reply: dict[str, Any]) -> tuple[object, ...]:
    """What ``_keep_top_labels`` looks at: ``TOP_LABELS``, ``created`` and ``object``."""
    return (*(reply.get(key) for key in TOP_LABELS), reply.get("created"), reply.get("object"))


def _keep_top_labels_once(reply: dict[str, Any], part: str, model: str,
                          held: dict[str, object] | None) -> bool:
    changed = False
    for key in TOP_LABELS:
        value = reply.get(key)
        if not value:
            continue  # absent, null or empty: nothing carried
        if held is not None and key in held:
            if value != held[key]:
                reply[key] = held[key]
                changed = True
            continue
        if type(value) is not str or not LABEL.fullmatch(value):
            changed = True
            value = FALLBACK_ID if key == "id" else (
                model if key == "model" and LABEL.fullmatch(model) else None)
            if value is None:
                del reply[key]
                continue
            reply[key] = value
        if held is not None:
            held[key] = value
    if (kind := reply.get("object")) is not None and kind != OBJECTS[part] and kind != "":
        reply["object"] = OBJECTS[part]
        changed = True
    if "created" in reply:
        created = reply["created"]
        if type(created) is not int and type(created) is not float:
            created = reply["created"] = int(time.time())
            changed = True
        if held is not None and created and (
                first := held.setdefault("created", created)) != created:
            reply["created"] = first
            changed = True
    return changed


def _keep_allowed_in_choice(choice: dict[str, Any], part: str, alternatives: bool) -> bool:
    changed = False
    allowed = _CHOICE_FIELDS_WITH[part]
    if not allowed.issuperset(choice):
        for key in [k for k in choice if k not in allowed]:
            del choice[key]
        changed = True
    finish = choice.get("finish_reason")
    if finish is not None and (type(finish) is not str or finish not in FINISH_REASONS):
        choice["finish_reason"] = (FINISH_SYNONYMS.get(finish, "stop") if type(finish) is str
                                   else "stop")
        changed = True
    message = choice.get(part)
    if isinstance(message, dict):
        changed = _keep_labels_in_text(message) or changed
    else:
        message = {}
    if choice.get("logprobs") is not None:
        logprobs = kept_logprobs(choice["logprobs"], message, alternatives)
        if logprobs is not choice["logprobs"]:
            changed = True
            choice["logprobs"] = logprobs
    if "stop_reason" in choice:
        changed = _keep_labels(choice, "stop_reason") or changed
    if "content_filter_results" in choice:
        changed = _keep_labels(choice, "content_filter_results") or changed
    return changed


def _keep_labels_in_text(message: dict[str, Any]) -> bool:
    """The message's or delta's keys, and the strings the check skips (``NOT_TEXT_FIELDS``,
    ``NOT_TEXT_PATHS``), as labels, in place (a ``role`` that is none is ``assistant``, the
    one a reply's message has; others are removed); True when changed."""
    for key, value in message.items():  # the common delta: text and a role, nothing nested
        if key in TEXT_KEYS and type(value) is not dict and type(value) is not list:
            continue
        if key == "role" and (value is None or (type(value) is str and value in ROLES)):
            continue
        return _walk_labels_in_text(message)
    return False


def _walk_labels_in_text(message: dict[str, Any]) -> bool:
    """``_keep_labels_in_text`` over the whole message. Iterative, as ``texts_of`` reads it:
    an upstream's nesting cannot exhaust the stack."""
    changed = False
    if (role := message.get("role")) is not None and (type(role) is not str
                                                       or role not in ROLES):
        message["role"] = "assistant"
        changed = True
    stack: list[tuple[object, str, bool]] = [(message, "", False)]  # (value, key, in audio)
    unknown: set[str] = set()  # the distinct keys outside KNOWN_KEYS relayed so far
    while stack:
        value, under, in_audio = stack.pop()
        if type(value) is dict:
            drop = []
            for key, inner in value.items():
                if key not in KNOWN_KEYS and (
                        not LABEL.fullmatch(key) or not _one_more(unknown, key)):
                    drop.append(key)
                elif type(inner) is str:
                    if not _may_be(inner, key, in_audio):
                        drop.append(key)
                elif type(inner) is dict or type(inner) is list:
                    stack.append((inner, key, value is message and key == "audio"))
            for key in drop:
                del value[key]
            changed = changed or bool(drop)
        elif type(value) is list:
            kept = [v for v in value if type(v) is not str or _may_be(v, under, in_audio)]
            if len(kept) != len(value):
                value[:] = kept
                changed = True
            stack.extend((v, under, in_audio) for v in value
                         if type(v) is dict or type(v) is list)
    return changed


def _one_more(unknown: set[str], key: str) -> bool:
    """Whether ``key`` (outside ``KNOWN_KEYS``) may be relayed: one of the first
    ``MAX_UNKNOWN_KEYS`` distinct ones (then noted in ``unknown``)."""
    if key in unknown:
        return True
    if len(unknown) >= MAX_UNKNOWN_KEYS:
        return False
    unknown.add(key)
    return True


def _may_be(value: str, key: str, in_audio: bool) -> bool:
    """Whether a string under ``key`` (in the message's ``audio``) may be relayed: any text the
    check reads, a label where it skips them."""
    if key in NOT_TEXT_FIELDS:
        if key == "role":
            return value in ROLES
        return LABEL.fullmatch(value) is not None
    if in_audio and key == "data":  # NOT_TEXT_PATHS
        return BASE64.fullmatch(value) is not None
    return True


def _keep_labels(holder: dict[str, Any], key: str) -> bool:
    """``holder[key]`` as labels only (removed when nothing of it is); True when changed."""
    value = holder[key]
    labels = _labels(value, 0, [MAX_LABELS])
    if labels is value:
        return False
    if labels is _DROP:
        del holder[key]
    else:
        holder[key] = labels
    return True


def _labels(value: object, depth: int, left: list[int]) -> object:
    """``value`` with every string and key that is not a label dropped, lists cut at
    ``MAX_LIST`` without strings, and strings and keys past ``left[0]`` dropped (the same object when nothing
    is), or ``_DROP`` when it is such a string or too deep."""
    if value is None or type(value) in _NUMBERS:
        return value
    if type(value) is str:
        left[0] -= 1
        return value if left[0] >= 0 and LABEL.fullmatch(value) else _DROP
    if depth >= MAX_DEPTH:
        return _DROP
    if type(value) is dict:
        return _kept_dict(value, lambda inner: _labels(inner, depth + 1, left), left)
    if type(value) is list:
        kept = [_DROP if type(inner) is str else _labels(inner, depth + 1, left)
                for inner in value[:MAX_LIST]]  # a list of words would be a sentence
        if len(value) <= MAX_LIST and all(new is old for new, old in zip(kept, value,
                                                                         strict=True)):
            return value
        return [new for new in kept if new is not _DROP]
    return _DROP


def _numbers(value: object, depth: int, left: list[int]) -> object:
    """``usage`` (and its objects) with numbers only, under label keys (the same object when
    it has nothing else), or ``_DROP``."""
    if value is None or type(value) in _NUMBERS:
        return value
    if type(value) is dict and depth < MAX_DEPTH:
        if len(value) <= left[0] and all(
                (inner is None or type(inner) in _NUMBERS)
                and (key in USAGE_KEYS or LABEL.fullmatch(key))
                for key, inner in value.items()):
            left[0] -= len(value)
            return value  # the common case, without a copy
        return _kept_dict(value, lambda inner: _numbers(inner, depth + 1, left), left)
    return _DROP


def _kept_dict(value: dict[str, Any], keep: Any, left: list[int]) -> dict[str, Any]:
    """The dict with each value as ``keep`` makes it, those it drops and those under keys that
    are not labels (or past ``left[0]``) left out (the same object when none changed)."""
    kept: dict[str, Any] = {}
    same = True
    for key, inner in value.items():
        left[0] -= 1
        new = keep(inner) if left[0] >= 0 and (key in USAGE_KEYS or LABEL.fullmatch(key)) else _DROP
        if new is not inner:
            same = False
        if new is not _DROP:
            kept[key] = new
    return value if same else kept
