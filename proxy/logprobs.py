"""The ``logprobs`` of a reply's choice as the gateway relays them: only when their tokens
spell the text the check read (so no token carries text the check did not see) and every
entry's other fields are what OpenAI's are (``well_typed``: a log-probability is a number,
bytes are bytes, so none carries text), each entry with its token, log-probability and bytes,
and every ``top_logprobs`` empty (the alternatives are tokens the model did not write; no
check reads them), unless no check of the reply can stop it (``alternatives_shown``): then
nothing is hidden from the client, and the alternatives go out, at most ``MAX_ALTERNATIVES``
per token, each its token, logprob and bytes."""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from typing import Any, Final, TypeGuard

LOGPROBS_FIELDS = ("content", "refusal")
"""The lists of a choice's ``logprobs``: one entry per token of its ``content`` or
``refusal``, relayed only when they spell it."""
TOKEN_FIELDS = frozenset({"token", "logprob", "bytes", "top_logprobs"})
"""The fields of a logprobs entry: its token (a piece of the checked text), the token's
log-probability and bytes, and ``top_logprobs``, the alternatives, relayed empty."""
ESCAPED_BYTES: Final = re.compile(r"(?:bytes:)?((?:\\x[0-9a-fA-F]{2})+)")
"""A token that is part of a character, written as its bytes (``bytes:\\xe2\\x80``): OpenAI's."""

MAX_TOKEN_BYTES: Final = 1024
"""The most bytes one token's ``bytes`` lists (a long token is a few hundred)."""
MAX_TOP_LOGPROBS: Final = 64
"""The most alternatives one entry's ``top_logprobs`` may list (OpenAI's limit is 20)."""
MAX_LOGPROB: Final = 1e6
"""The largest log-probability relayed either way (OpenAI's floor is -9999.0): a number, not
a carrier of digits."""

ALTERNATIVE_FIELDS = frozenset({"token", "logprob", "bytes"})
"""The fields of one of ``top_logprobs``' alternatives."""
MAX_ALTERNATIVES = 20
"""The most alternatives relayed per token (OpenAI's ``top_logprobs`` is at most 20)."""

alternatives_shown: ContextVar[bool] = ContextVar("alternatives_shown", default=False)
"""Whether this request's upstream replies may keep their ``top_logprobs``: set, for the
request's upstream call, where its policy is known (``proxy.call.Call.params``), true only
when no check of the reply can block or regenerate it; unset (another caller of the
upstream), they are emptied."""

_DROP: Final = object()
_INTS: Final = {int}


def kept_logprobs(value: object, message: dict[str, Any], alternatives: bool = False) -> object:
    """A choice's ``logprobs`` with only ``LOGPROBS_FIELDS``, their entries with only
    ``TOKEN_FIELDS`` and every ``top_logprobs`` empty (``alternatives``: bounded, see above;
    the same object when it was so), or None when malformed or when a list's tokens do not
    spell its message's text."""
    if type(value) is not dict:
        return None
    kept: dict[str, Any] = {}
    same = len(value) <= len(LOGPROBS_FIELDS)
    for name in LOGPROBS_FIELDS:
        if name not in value:
            continue
        entries = value[name]
        if entries is not None:
            tokens = _token_list(entries, alternatives)
            text = message.get(name)
            if tokens is _DROP or not _spell(tokens, text if type(text) is str else ""):
                return None
            same = same and tokens is entries
            entries = tokens
        kept[name] = entries
    return value if same and len(kept) == len(value) else kept


def _token_list(value: object, alternatives: bool) -> Any:
    if type(value) is not list:
        return _DROP
    kept = [_token(entry, alternatives) for entry in value]
    if any(new is _DROP for new in kept):
        return _DROP
    if all(new is old for new, old in zip(kept, value, strict=True)):
        return value
    return kept


def _token(entry: object, alternatives: bool) -> object:
    if not well_typed(entry) or not _top_well_typed(entry):
        return _DROP
    top = entry.get("top_logprobs")
    shown = _alternatives(top) if alternatives and top else []
    if TOKEN_FIELDS.issuperset(entry) and (not top or shown is top):
        return entry
    kept = {k: v for k, v in entry.items() if k in TOKEN_FIELDS}
    if "top_logprobs" in kept:
        kept["top_logprobs"] = shown
    return kept


def _alternatives(value: object) -> list[Any]:
    """``top_logprobs`` as relayed when shown (each already ``well_typed``): its first
    ``MAX_ALTERNATIVES`` entries, each with ``ALTERNATIVE_FIELDS`` only (the same list when it
    was so)."""
    if type(value) is not list:
        return []
    if len(value) <= MAX_ALTERNATIVES and all(ALTERNATIVE_FIELDS.issuperset(a) for a in value):
        return value
    return [{k: v for k, v in a.items() if k in ALTERNATIVE_FIELDS}
            for a in value[:MAX_ALTERNATIVES]]


def well_typed(entry: object) -> TypeGuard[dict[str, Any]]:
    """Whether a logprobs entry (or one of its ``top_logprobs``) is as OpenAI's: its ``token`` a
    string; its ``logprob`` (when there) a finite int or float, not a bool, within
    ``MAX_LOGPROB``; its ``bytes`` null or a list of at most ``MAX_TOKEN_BYTES`` ints 0-255."""
    if type(entry) is not dict or type(entry.get("token")) is not str:
        return False
    if "logprob" in entry:
        logprob = entry["logprob"]
        if (type(logprob) is not float and type(logprob) is not int) or not (
                -MAX_LOGPROB <= logprob <= MAX_LOGPROB) or not math.isfinite(logprob):
            return False
    listed = entry.get("bytes")
    if listed is None:
        return True
    if type(listed) is not list or len(listed) > MAX_TOKEN_BYTES or (
            listed and set(map(type, listed)) != _INTS):  # no bool, float or string
        return False
    try:
        bytes(listed)  # each 0-255
    except ValueError:
        return False
    return True


def _top_well_typed(entry: dict[str, Any]) -> bool:
    """Whether an entry's ``top_logprobs`` (when there) is null or a list of at most
    ``MAX_TOP_LOGPROBS`` entries, each ``well_typed``."""
    top = entry.get("top_logprobs")
    return top is None or (type(top) is list and len(top) <= MAX_TOP_LOGPROBS
                           and all(well_typed(alternative) for alternative in top))


def _spell(entries: list[dict[str, Any]], text: str) -> bool:
    """Whether the tokens spell ``text``: joined they are it, each token's ``bytes`` (when
    not null) its UTF-8; or, for tokens that are parts of characters (``ESCAPED_BYTES``), their
    bytes joined are its UTF-8."""
    pieces: list[bytes] = []
    every_bytes = True
    for entry in entries:
        token = entry["token"]
        listed = entry.get("bytes")
        if listed is None:
            every_bytes = False  # the tokens must spell it as they are
            continue
        if type(listed) is not list:
            return False
        try:
            raw = bytes(listed)
        except (TypeError, ValueError):
            return False
        if raw != token.encode("utf-8", "surrogatepass"):
            escaped = ESCAPED_BYTES.fullmatch(token)
            if escaped is None or bytes.fromhex(escaped[1].replace("\\x", "")) != raw:
                return False
        pieces.append(raw)
    if "".join(entry["token"] for entry in entries) == text:
        return True
    return every_bytes and b"".join(pieces) == text.encode("utf-8", "surrogatepass")
