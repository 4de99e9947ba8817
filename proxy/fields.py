"""The fields of an upstream's reply or stream chunk that the gateway relays: an allow-list
(forward only what is allow-listed; refuse by default).

The reply check reads every string of each choice's ``message`` or ``delta``
(``proxy.chunks.texts_of``); anything outside them reached the client unread, so an upstream
(or a model behind one) could put the words a policy blocks in a choice's ``text``, a
top-level ``extra``, or the ``top_logprobs`` alternatives, and they went out in plain replies
and in buffer and chunked streams alike. Here, where a reply enters (``proxy.upstream.entered``,
on both upstream paths), everything else is removed: unknown fields, free text in fields that
carry labels, strings in ``usage``, and the ``top_logprobs`` alternatives (tokens that were not
the reply, so never checked: each list is emptied, keeping the shape a client expects).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

REPLY_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage",
                          "system_fingerprint", "service_tier", "prompt_filter_results"})
"""The top-level fields of a reply or chunk that are relayed: OpenAI's, and Azure's
``prompt_filter_results`` (in chunks without choices held before the first with one:
``proxy.upstream.open_stream``), kept as labels only (``LABEL_FIELDS``). Nothing here is text
of the reply; every other field is dropped."""
CHOICE_FIELDS = frozenset({"index", "finish_reason", "logprobs", "stop_reason",
                           "content_filter_results"})
"""The fields of a choice that are relayed besides its ``message`` (a reply's) or ``delta`` (a
chunk's), which is kept whole (every string in it is checked): OpenAI's, vLLM's
``stop_reason`` (the stop string or token id that ended the choice) and Azure's
``content_filter_results``, both labels only (``LABEL_FIELDS``). Every other field is dropped."""
LABEL_FIELDS = frozenset({"prompt_filter_results", "content_filter_results", "stop_reason"})
"""Fields whose values are labels (flags, severities, ids, numbers): each string in them that
is not a label (``LABEL``), such as an error message or a citation, is dropped, so no text
of any length passes unchecked."""
LABEL: Final = re.compile(r"[\w.:/-]{0,64}", re.ASCII)
"""A label: one word of at most 64 letters, digits and ``_.:/-`` (``safe``, ``high``,
``custom_blocklist_1``, ``</s>``'s token id as a number); no spaces, so no sentence."""
LOGPROBS_FIELDS = frozenset({"content", "refusal"})
"""The lists of a choice's ``logprobs``: one entry per token of its ``content`` or
``refusal``, both checked."""
TOKEN_FIELDS = frozenset({"token", "logprob", "bytes", "top_logprobs"})
"""The fields of a logprobs entry: its token (a piece of the checked text), the token's
log-probability and bytes, and ``top_logprobs``, the alternatives, relayed empty."""
MAX_DEPTH = 6
"""How deep ``usage`` and the label fields are read; deeper values are dropped."""

_DROP: Final = object()
_NUMBERS = (int, float, bool)
_CHOICE_FIELDS_WITH = {part: CHOICE_FIELDS | {part} for part in ("message", "delta")}


def keep_allowed(reply: dict[str, Any], part: str) -> bool:
    """Remove from a reply (``part="message"``) or chunk (``"delta"``), in place, every field
    that is not allow-listed, as described above; True when something was removed or changed.
    Its choices must be well formed already (``proxy.upstream.checked_choices``)."""
    changed = False
    if not REPLY_FIELDS.issuperset(reply):
        for key in [k for k in reply if k not in REPLY_FIELDS]:
            del reply[key]
        changed = True
    if "usage" in reply and (usage := _numbers(reply["usage"])) is not reply["usage"]:
        changed = True
        if usage is _DROP:
            del reply["usage"]
        else:
            reply["usage"] = usage
    if "prompt_filter_results" in reply:
        changed = _keep_labels(reply, "prompt_filter_results") or changed
    for choice in reply.get("choices") or ():
        changed = _keep_allowed_in_choice(choice, part) or changed
    return changed


def _keep_allowed_in_choice(choice: dict[str, Any], part: str) -> bool:
    changed = False
    allowed = _CHOICE_FIELDS_WITH[part]
    if not allowed.issuperset(choice):
        for key in [k for k in choice if k not in allowed]:
            del choice[key]
        changed = True
    if choice.get("logprobs") is not None:
        logprobs = _logprobs(choice["logprobs"])
        if logprobs is not choice["logprobs"]:
            changed = True
            choice["logprobs"] = None if logprobs is _DROP else logprobs
    for key in ("stop_reason", "content_filter_results"):
        if key in choice:
            changed = _keep_labels(choice, key) or changed
    return changed


def _keep_labels(holder: dict[str, Any], key: str) -> bool:
    """``holder[key]`` as labels only (removed when nothing of it is); True when changed."""
    value = holder[key]
    labels = _labels(value, 0)
    if labels is value:
        return False
    if labels is _DROP:
        del holder[key]
    else:
        holder[key] = labels
    return True


def _labels(value: object, depth: int) -> object:
    """``value`` with every string that is not a label dropped (the same object when nothing
    is), or ``_DROP`` when it is such a string or too deep."""
    if value is None or type(value) in _NUMBERS:
        return value
    if type(value) is str:
        return value if LABEL.fullmatch(value) else _DROP
    if depth >= MAX_DEPTH:
        return _DROP
    if type(value) is dict:
        return _kept_dict(value, lambda inner: _labels(inner, depth + 1))
    if type(value) is list:
        kept = [_labels(inner, depth + 1) for inner in value]
        if all(new is old for new, old in zip(kept, value, strict=True)):
            return value
        return [new for new in kept if new is not _DROP]
    return _DROP


def _numbers(value: object, depth: int = 0) -> object:
    """``usage`` (and its objects) with numbers only (the same object when it has nothing
    else), or ``_DROP``."""
    if value is None or type(value) in _NUMBERS:
        return value
    if type(value) is dict and depth < MAX_DEPTH:
        if all(inner is None or type(inner) in _NUMBERS for inner in value.values()):
            return value  # the common case, without a copy
        return _kept_dict(value, lambda inner: _numbers(inner, depth + 1))
    return _DROP


def _kept_dict(value: dict[str, Any], keep: Callable[[object], object]) -> dict[str, Any]:
    """The dict with each value as ``keep`` makes it, those it drops left out (the same
    object when none changed)."""
    kept: dict[str, Any] = {}
    same = True
    for key, inner in value.items():
        new = keep(inner)
        if new is not inner:
            same = False
        if new is not _DROP:
            kept[key] = new
    return value if same else kept


def _logprobs(value: object) -> object:
    """A choice's ``logprobs`` with only ``LOGPROBS_FIELDS``, their entries with only
    ``TOKEN_FIELDS`` and every ``top_logprobs`` empty (the same object when it was so)."""
    if type(value) is not dict:
        return _DROP
    if LOGPROBS_FIELDS.issuperset(value):
        return _kept_dict(value, _token_list)
    return _kept_dict({k: v for k, v in value.items() if k in LOGPROBS_FIELDS}, _token_list)


def _token_list(value: object) -> object:
    if value is None:
        return value
    if type(value) is not list:
        return _DROP
    kept = [_token(entry) for entry in value]
    if all(new is old for new, old in zip(kept, value, strict=True)):
        return value
    return [new for new in kept if new is not _DROP]


def _token(entry: object) -> object:
    if type(entry) is not dict:
        return _DROP
    if TOKEN_FIELDS.issuperset(entry) and not entry.get("top_logprobs"):
        return entry
    kept = {k: v for k, v in entry.items() if k in TOKEN_FIELDS}
    if "top_logprobs" in kept:
        kept["top_logprobs"] = []
    return kept
