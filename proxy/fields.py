"""The fields of an upstream's reply or stream chunk that the gateway relays: an allow-list
(forward only what is allow-listed; refuse by default).

The reply check reads every string of each choice's ``message`` or ``delta``
(``proxy.chunks.texts_of``) but the labels and ids there (``NOT_TEXT_FIELDS``); anything else
reached the client unread, so an upstream (or a model behind one) could put the words a policy
blocks in a choice's ``text``, a top-level ``extra``, the ``top_logprobs`` alternatives, the
reply's ``id`` or ``model``, a ``finish_reason``, the logprobs' tokens, the keys of ``usage``,
a message's ``role``, a tool call's ``id``, a key shaped like a label (``I_will_stab_you``)
or a logprob that was no number, and they went out in plain replies and in buffer and chunked
streams alike. Here, where a reply enters (``proxy.upstream.entered``, on both upstream
paths), everything relayed becomes either text the check reads or a value that says nothing
(a number, a flag, a label from a fixed set, an id of a word or two at most):

- unknown fields are removed;
- ``id`` and ``system_fingerprint`` are ids (``proxy.reply_schema.is_id``: at most 64 letters,
  digits, ``_`` and ``-``, a word or two at most; else ``FALLBACK_ID``, or removed),
  ``service_tier`` one of OpenAI's, ``model`` the requested or a configured model's name or
  a version of it (``is_model_of``: ``gpt-4o-2024-08-06`` for ``gpt-4o``; else the requested
  name: a label such as ``I-will-stab-you-tonight`` was relayed unread),
  ``object`` the right one, ``created`` a number; a stream's are its first chunk's throughout
  (``StreamLabels``: no sentence spelled one chunk's id at a time), and so is each choice's
  audio ``id``;
- a ``finish_reason`` is one of ``FINISH_REASONS`` (others mapped, as LiteLLM maps them);
- the message or delta, ``usage`` and Azure's filter results keep only the keys of their
  schema (``proxy.reply_schema``: OpenAI's and a few known providers'), each with the kind of
  value it may hold: text the check reads, numbers, flags, a ``type`` or ``role`` from a fixed
  set, ids (a tool call's replaced by the gateway's: ``reply_schema.fresh_id``), base64 audio data;
- ``logprobs`` are relayed only when their tokens spell the checked ``content`` (``refusal``)
  of the same message or delta and their numbers are numbers (``proxy.logprobs``), with every
  ``top_logprobs`` emptied (alternatives that were not the reply, so never checked), keeping
  the shape a client expects; unless no check of the reply can stop it
  (``proxy.logprobs.alternatives_shown``): then they are relayed, bounded;
- a message's or delta's ``audio`` is relayed only to a request that asked for audio
  (``audio_asked``): its base64 ``data`` cannot be judged (its words are judged through its
  ``transcript``, which is held and checked with the rest of the message), and a sentence
  written without spaces (``IWillStabYouTonight``) is valid base64, so to any other request an
  upstream's ``audio`` is text nothing read, and it is removed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, Final, cast

from proxy.logprobs import alternatives_shown, kept_logprobs
from proxy.reply_schema import (
    CONTENT_FILTER,
    DROP,
    MESSAGE,
    PROMPT_FILTER,
    ROLES,
    SERVICE_TIERS,
    USAGE,
    Keep,
    is_id,
    stop_reason,
)

__all__ = ["LABEL", "NOT_TEXT_FIELDS", "NOT_TEXT_PATHS", "ROLES", "StreamLabels",
           "asks_for_audio", "audio_asked", "keep_allowed"]

REPLY_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage",
                          "system_fingerprint", "service_tier", "prompt_filter_results"})
"""The top-level fields of a reply or chunk that are relayed: OpenAI's, and Azure's
``prompt_filter_results`` (in chunks without choices held before the first with one:
``proxy.upstream.open_stream``), as its schema has it (``proxy.reply_schema.PROMPT_FILTER``).
Nothing here is text of the reply; every other field is dropped."""
CHOICE_FIELDS = frozenset({"index", "finish_reason", "logprobs", "stop_reason",
                           "content_filter_results"})
"""The fields of a choice that are relayed besides its ``message`` (a reply's) or ``delta`` (a
chunk's), which keeps the keys of its schema (``proxy.reply_schema.MESSAGE``): OpenAI's,
vLLM's ``stop_reason`` (the token id or id-shaped stop string that ended the choice) and
Azure's ``content_filter_results`` (``proxy.reply_schema.CONTENT_FILTER``). Every other field
is dropped."""
LABEL: Final = re.compile(r"[A-Za-z0-9_.:/@+=-]{0,128}")
"""A label: one word of at most 128 ASCII letters, digits and ``_.:/@+=-`` (a reply's
``model``: ``meta-llama/Llama-3.1-8B``, ``claude-3-5-sonnet@20240620``; an upstream error's
``param`` and ``code``, ``proxy.errors``)."""
FALLBACK_ID = "chatcmpl-vilmo"
"""A reply's or stream's ``id`` when the upstream's is not an id."""
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
is one of a fixed set or an id (``proxy.reply_schema``), or it is removed."""
NOT_TEXT_PATHS = frozenset({("audio", "data")})
"""Paths (keys only, without list positions) of strings that are not text: the base64 audio
of an audio reply (its words are in ``audio.transcript``, which is checked); one that is not
standard base64 (``proxy.reply_schema.AUDIO_DATA``) is removed."""
TOP_LABELS = ("id", "model", "system_fingerprint", "service_tier")
"""The top-level fields that are labels (and a stream's first chunk's throughout)."""
TEXT_KEYS = frozenset({"content", "refusal", "reasoning_content", "reasoning"})
"""Keys of a message or delta whose strings are its text (read by the check)."""

_CHOICE_FIELDS_WITH = {part: CHOICE_FIELDS | {part} for part in ("message", "delta")}

audio_asked: ContextVar[bool] = ContextVar("vilmo_audio_asked", default=False)
"""Whether this request's upstream replies may carry ``audio``: set for the request's upstream
call (``proxy.call.Call.params``) by ``asks_for_audio``; unset (another caller of the
upstream), a reply's audio is removed."""


def asks_for_audio(params: Mapping[str, Any]) -> bool:
    """Whether a chat request asks for audio output: ``modalities`` with ``"audio"``, or the
    ``audio`` parameter (its voice and format)."""
    modalities = params.get("modalities")
    return (isinstance(modalities, list) and "audio" in modalities) or isinstance(
        params.get("audio"), dict)


class StreamLabels:
    """The labels of one stream (``TOP_LABELS`` and ``created``): each the first chunk's that
    has it, so that later chunks carrying others (a sentence spelled one chunk at a time) are
    given these. Empty values (Azure's held chunks have ``""`` and ``0``) are left alone."""

    __slots__ = ("alternatives", "audio", "audio_ids", "held", "last")

    def __init__(self) -> None:
        self.alternatives = alternatives_shown.get()
        """The stream's ``top_logprobs`` shown or not: as its call's context said at its start."""
        self.audio = audio_asked.get()
        """The stream's ``audio`` relayed or not (``audio_asked``), as at its start."""
        self.held: dict[str, object] = {}
        self.audio_ids: dict[object, object] = {}
        """Each choice's audio ``id`` (by the choice's index): its first one throughout, as
        the top-level id (the client sends it back to the upstream, which keeps the audio by
        it, so it is relayed as the upstream made it, not replaced as a tool call's is)."""
        self.last: tuple[object, ...] | None = None
        """The labels of the chunk before, as it was relayed: a chunk with the same needs no
        look."""


def keep_allowed(reply: dict[str, Any], part: str, model: str = "",
                 stream: StreamLabels | None = None) -> bool:
    """Remove from a reply (``part="message"``) or chunk (``"delta"``), in place, every field
    that is not allow-listed and every label that is not one, as described above; True when
    something was removed or changed. ``model`` is the requested model (a ``model`` that is
    not it, a configured one or a version of either is replaced by it: ``is_model_of``);
    ``stream`` holds a stream's labels across its chunks. Its choices must be well formed
    already (``proxy.upstream.checked_choices``)."""
    changed = False
    if not REPLY_FIELDS.issuperset(reply):
        for key in [k for k in reply if k not in REPLY_FIELDS]:
            del reply[key]
        changed = True
    changed = _keep_top_labels(reply, part, model, stream) or changed
    if reply.get("usage") is not None:
        changed = _keep(reply, "usage", USAGE) or changed
    if "prompt_filter_results" in reply:
        changed = _keep(reply, "prompt_filter_results", PROMPT_FILTER) or changed
    shown = stream.alternatives if stream is not None else alternatives_shown.get()
    audio = stream.audio if stream is not None else audio_asked.get()
    for choice in reply.get("choices") or ():
        changed = _keep_allowed_in_choice(choice, part, shown, audio) or changed
        if stream is not None:
            changed = _hold_audio_id(choice.get(part), choice.get("index"), stream) or changed
    return changed


def _hold_audio_id(message: object, index: object, stream: StreamLabels) -> bool:
    """A streamed choice's audio ``id`` as its first chunk's (``StreamLabels.audio_ids``);
    True when changed."""
    sound = message.get("audio") if isinstance(message, dict) else None
    if not isinstance(sound, dict) or not sound.get("id"):
        return False
    first = stream.audio_ids.setdefault(index, sound["id"])
    if sound["id"] == first:
        return False
    sound["id"] = first
    return True


def _keep(holder: dict[str, Any], key: str, rule: Keep) -> bool:
    """``holder[key]`` as ``rule`` keeps it (removed when it drops it); True when changed."""
    value = holder[key]
    kept = rule(value)
    if kept is value:
        return False
    if kept is DROP:
        del holder[key]
    else:
        holder[key] = kept
    return True


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


_VERSION_TAG = (r"(?:20\d\d-?[01]\d-?[0-3]\d"  # a date: 2024-08-06, 20240620
                r"|\d{1,4}"  # a short number: 0613 (MMDD), 2407 (YYMM), 002, 0
                r"|v\d{1,3}(?:\.\d{1,3})?"  # v2, v1.5
                r"|latest|preview|instruct|turbo)")
_SIZE_TAG = (r"\d{1,3}(?:\.\d)?[bm]"  # parameters: 8b, 3.8b, 135m
             r"(?:-instruct)?"
             r"(?:-(?:q\d(?:_[01ksml]){1,2}|q\d|[bf]?f16|fp16|fp32))?")  # q4_0, q4_K_M, fp16
MODEL_VERSION: Final = re.compile(
    rf"(?:[-_.]{_VERSION_TAG}|-{_SIZE_TAG}){{0,3}}(?:@{_VERSION_TAG}|:(?:{_VERSION_TAG}"
    rf"|{_SIZE_TAG}))?", re.IGNORECASE)
"""A version after a model's name, and nothing else: up to three parts after ``-`` (``_``,
``.``) and one after ``@`` or ``:``, each a date, a number of at most 4 digits, ``vN`` or
``vN.N``, or one of the words ``latest``, ``preview``, ``instruct``, ``turbo``
(``gpt-4o-2024-08-06``, ``gpt-4-1106-preview``, ``claude-3-5-sonnet-v2@20241022``,
``llama3:latest``, ``gemini-1.5-pro-002``); after ``-`` or ``:`` also a parameter size
(``_SIZE_TAG``: ``8b``, ``3.8b``, ``135m``), optionally with ``-instruct`` and a quantisation
(``q4_0``, ``q4_K_M``, ``fp16``): ``llama3.1:8b``, ``qwen2.5:7b-instruct-q4_0``. Only known
shapes: any part of letters and digits let an upstream spell words in leetspeak
(``gpt-4o-1-w1ll-5tab-y0u-t0n1ght``); none of these can."""
_VERSION_CUT: Final = re.compile(r"[-@:._]")


_known_models: frozenset[str] = frozenset()


def know_models(names: Iterable[str]) -> None:
    """Add the configured model names (``model_list``: each ``model_name``, and each
    ``litellm_params.model`` with every ``provider/`` prefix off) to the names a reply's
    ``model`` may carry (``is_model_of``): an alias's upstream answers with its own name."""
    global _known_models  # the gateway's configuration, set where its upstream is built
    known = set(_known_models)
    for name in names:
        while name and "*" not in name:
            known.add(name)
            name = name.partition("/")[2]
    _known_models = frozenset(known)


def is_model_of(value: str, requested: str) -> bool:
    """Whether ``value`` names the ``requested`` model or a configured one (``know_models``):
    the same name, or it and a version (``gpt-4o-2024-08-06``, ``claude-3-5-sonnet@20240620``,
    ``llama3:latest``). Any other name is the upstream's text, which the reply check does not
    read (``I-will-stab-you-tonight`` is a label); without a requested name (``""``), a
    ``LABEL``."""
    if value == requested or value in _known_models:
        return True
    if not requested:
        return LABEL.fullmatch(value) is not None
    if len(value) > 128:
        return False
    for cut in _VERSION_CUT.finditer(value):
        name = value[:cut.start()]
        if ((name == requested or name in _known_models)
                and MODEL_VERSION.fullmatch(value, cut.start()) is not None):
            return True
    return False


def _is_top_label(key: str, value: object, model: str) -> bool:
    """Whether ``value`` may be relayed as the reply's ``key``: an id, the requested model
    (``model``) or a version of it, a tier."""
    if key == "model":
        return type(value) is str and is_model_of(value, model)
    if key == "service_tier":
        return value in SERVICE_TIERS
    return is_id(value)


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
        if not _is_top_label(key, value, model):
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


def _keep_allowed_in_choice(choice: dict[str, Any], part: str, alternatives: bool,
                            audio: bool) -> bool:
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
        if not audio and message.get("audio") is not None:  # not asked for: unjudged bytes
            del message["audio"]
            changed = True
        if not _plain_text(message) and (kept := MESSAGE(message)) is not message:
            message.clear()  # in place, as everything else here
            message.update(cast(dict[str, Any], kept))
            changed = True
    else:
        message = {}
    if choice.get("logprobs") is not None:
        logprobs = kept_logprobs(choice["logprobs"], message, alternatives)
        if logprobs is not choice["logprobs"]:
            changed = True
            choice["logprobs"] = logprobs
    if "stop_reason" in choice:
        changed = _keep(choice, "stop_reason", stop_reason) or changed
    if "content_filter_results" in choice:
        changed = _keep(choice, "content_filter_results", CONTENT_FILTER) or changed
    return changed


def _plain_text(message: dict[str, Any]) -> bool:
    """Whether a message or delta holds only texts and a role (the common delta), so that it
    is as its schema (``MESSAGE``) would keep it without a walk."""
    for key, value in message.items():
        if key in TEXT_KEYS and (value is None or type(value) is str):
            continue
        if key == "role" and (value is None or (type(value) is str and value in ROLES)):
            continue
        return False
    return True
