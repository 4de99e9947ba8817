"""What the input check reads of a chat request, refusing by default: the text of every
client message of the roles the policy names (``checks.input_roles``, all by default: the
client writes every role, the system prompt, earlier assistant turns and tool results
included), and the definitions the model reads beside them (each tool's or function's name,
description and parameter schema, a response format's schema, a Predicted Output's text).

Of a message, every string is read but the labels and ids of ``NOT_TEXT_FIELDS`` that are
ids (``proxy.reply_schema.is_id``: a word or two at most): its content (text and refusal
parts), ``refusal``, ``name``, the names and arguments of its tool and function calls, fields
the gateway does not know, and a ``tool_call_id``, a tool call's ``id`` or ``type`` or a
nested ``role`` that is no id (the client writes them, and the upstream's model may read
them: a sentence there is read like any other), and the keys that are no labels (a field the
gateway does not know named with a sentence, a schema's ``$defs`` names). Content parts the
judge cannot read (``UNREADABLE_PARTS``: images, audio, files) are refused under
``checks.unreadable_parts: refuse`` (the default), or forwarded unchecked under ``allow``.
The same reading serves the chat route's input check (``proxy.pipeline.checked_turns``) and
``/v1/values/check``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from proxy.errors import InvalidRequest, PayloadTooLarge
from proxy.fields import NOT_TEXT_FIELDS
from proxy.guard import ITEM_CHARS, checked_chars, read_chars, too_much_read
from proxy.judged_text import judged, visible
from proxy.off_loop import OFF_LOOP_CHARS, off_loop_past
from proxy.protocol import FORWARDED_FIELDS
from proxy.reply_schema import is_id
from proxy.shown_text import tag_reading
from vilmo.judge.classifier import ScoreInput
from vilmo.policy import Policy

UNREADABLE_PARTS = frozenset({"image_url", "input_audio", "file"})
"""Content part types the judge cannot read (it reads text only)."""
TEXT_PARTS = {"text": "text", "refusal": "refusal"}
"""Content part types the judge reads, and the field that holds their text."""
DEFINITIONS = ("tools", "functions", "response_format")
"""Request fields whose text the model reads beside the messages (``functions``: the legacy
form of ``tools``, forwarded only where a model's ``allowed_params`` names it)."""

NOT_READ_FIELDS = frozenset({*DEFINITIONS, "extra_body"})
"""Request fields beyond OpenAI's (``protocol.FORWARDED_FIELDS``) that are not read as one
text each: the definitions (read above), and ``extra_body`` (the client's ``metadata``, which
no model reads). Every other one a model's ``allowed_params`` lets through is read: the
gateway cannot know which the model reads (vLLM's ``chat_template``, ``documents``)."""

KEY_LABEL = re.compile(r"\$?[A-Za-z0-9_.-]{1,64}")
"""What a key that is a label looks like (``max_completion_tokens``, ``$defs``,
``additionalProperties``); with at most ``KEY_LABEL_WORDS`` words it is not read."""
KEY_LABEL_WORDS = 3
_KEY_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z0-9]+(?![a-z])")
"""A key's words: cut at ``_.-$`` and where camel case starts one."""


def judged_texts(texts: Sequence[str]) -> list[ScoreInput]:
    """Each text as the judge reads it (``proxy.judged_text.judged``, its length as sent kept
    beside it), blank ones left out."""
    return [item for item in map(judged, texts) if item.response.strip()]


def shown_chars(texts: Sequence[str]) -> int:
    """What the texts count against ``checks.max_chars`` before the judge reads them
    (``proxy.guard.checked_chars`` of their ``visible`` lengths plus their tag characters,
    ``proxy.judged_text.shown_length``; blank ones left out): the most their judged texts
    count, known without reading a decode level. A text of tag characters alone shows nothing
    but is read (``tag_reading``), so it counts."""
    total = 0
    for text in texts:
        shown, tags = visible(text), tag_reading(text)
        if shown.strip() or tags.strip():
            total += max(len(shown) + len(tags), ITEM_CHARS)
    return total


def read_texts(messages: Sequence[Mapping[str, Any]], roles: Sequence[str],
               definitions: Mapping[str, Any] | None = None,
               ) -> tuple[list[str], list[tuple[str, str]]]:
    """The texts of the messages of ``roles`` (a message's content is one text, exactly the
    user turn ``vilmo.instruct.instructions.message_text`` reads, so the instruction step's
    second look reuses its score when the judge reads it as written; its other fields one
    more), then one text per tool or function definition, one for the response format, one
    for a Predicted Output
    (``predicted_text``) and one per other field a model's ``allowed_params`` lets through
    (``NOT_READ_FIELDS``), as the client wrote them; and where the unreadable parts are."""
    texts: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for at, message in enumerate(messages):
        if message.get("role") not in roles:
            continue
        content = message.get("content")
        others = {k: v for k, v in message.items() if k != "content"}
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            read: list[str] = []
            rest: list[object] = []  # the parts' other fields
            for i, part in enumerate(content):
                kind = part.get("type") if isinstance(part, Mapping) else None
                field = TEXT_PARTS.get(kind) if isinstance(kind, str) else None
                if field is not None and isinstance(part.get(field), str):
                    read.append(part[field])
                    rest.append({k: v for k, v in part.items() if k != field})
                elif isinstance(kind, str) and kind in UNREADABLE_PARTS:
                    unreadable.append((f"messages.{at}.content.{i}", kind))
                else:  # a part of no known type is read whole
                    rest.append(part)
            texts.append("\n".join(read))
            others["content"] = rest
        texts.append(_joined(others))
    for name in DEFINITIONS:
        value = (definitions or {}).get(name)
        for definition in value if isinstance(value, list) else [value]:
            texts.append(_joined({name: definition}))
    texts.append(predicted_text((definitions or {}).get("prediction")))
    texts.extend(_joined({name: value}) for name, value in (definitions or {}).items()
                 if name not in FORWARDED_FIELDS and name not in NOT_READ_FIELDS)
    return texts, unreadable


def predicted_text(prediction: object) -> str:
    """A request's Predicted Output (``prediction``), which the model reads: its text (parts
    joined one a line), or "" without one. Of the documented shape only, ``{"type":
    "content", "content": text or text parts}``, so that the check knows it read every word:
    another is the client's 400 naming the field."""
    if prediction is None:
        return ""
    if not isinstance(prediction, Mapping):
        raise _bad_prediction("prediction", "an object")
    extra = sorted(str(k) for k in prediction if k not in ("type", "content"))
    if extra:
        raise _bad_prediction(f"prediction.{extra[0]}", "no such field")
    if prediction.get("type") != "content":
        raise _bad_prediction("prediction.type", '"content"')
    content = prediction.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad_prediction("prediction.content", "a string or a list of text parts")
    for at, part in enumerate(content):
        if not (isinstance(part, Mapping) and set(part) == {"type", "text"}
                and part["type"] == "text" and isinstance(part["text"], str)):
            raise _bad_prediction(f"prediction.content.{at}",
                                  '{"type": "text", "text": a string}')
    return "\n".join(part["text"] for part in content)


def _bad_prediction(param: str, wanted: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: expected {wanted} (a Predicted Output is "
                          '{"type": "content", "content": a string or text parts})',
                          param=param, code="invalid_request")


async def checked_input(messages: Sequence[Mapping[str, Any]], policy: Policy,
                        definitions: Mapping[str, Any] | None = None) -> list[ScoreInput]:
    """The input texts the policy's check reads, each as a reply's text is read
    (``judged_texts``: JSON escapes decoded at every level, bidi runs as shown, without what
    renders as nothing: each hides words from the judge, not from the model, nor from whoever
    reads what it is asked to repeat), counted and read in a worker thread past
    ``OFF_LOOP_CHARS`` (``_counted_then_read``). Only what
    the judge reads: the messages go upstream as they came. A part the judge cannot read is
    the client's 400 (``unreadable_input``, ``param`` naming it) under
    ``checks.unreadable_parts: refuse``. Over ``checks.max_chars`` (``checked_chars``: each
    text by its length as sent, at least ``ITEM_CHARS``; known before any decode level is
    read), or reading more than ``proxy.guard.READ_FACTOR`` times that (``too_much_read``),
    the request is refused (413) whatever ``on_error``: the client chose that size, or that
    many texts, so failing open would let it choose an unchecked input. Both before the
    upstream is called."""
    checks = policy.checks
    texts, unreadable = read_texts(messages, checks.input_roles, definitions)
    if unreadable and checks.unreadable_parts == "refuse":
        param, kind = unreadable[0]
        raise InvalidRequest(f"{param} is an {kind} part, which the value check cannot read; "
                             f"policy {policy.name!r} checks input and refuses such parts "
                             "(checks.unreadable_parts: refuse)",
                             param=param, code="unreadable_input")
    read = await off_loop_past(sum(map(len, texts)), OFF_LOOP_CHARS, _counted_then_read, texts,
                               policy)
    if (reason := too_much_read(checked_chars(read), read_chars(read))) is not None:
        raise PayloadTooLarge(f"input to check: {reason}; policy {policy.name!r} refuses such "
                              "input whatever on_error", param="messages",
                              code="check_too_large")
    return read


def _counted_then_read(texts: Sequence[str], policy: Policy) -> list[ScoreInput]:
    """``texts`` counted against ``checks.max_chars`` (``shown_chars``), then read
    (``judged_texts``): one step, so that past ``OFF_LOOP_CHARS`` both run in the worker
    thread (counting is a regex over every character too, and invisible ones count 0, so a
    body of them is never refused first) and an input over the limit is refused there before
    any decode level is read."""
    _refuse_over_max_chars(shown_chars(texts), policy)
    return judged_texts(texts)


def _refuse_over_max_chars(size: int, policy: Policy) -> None:
    if size > policy.checks.max_chars:
        raise PayloadTooLarge(f"{size} characters of input to check (the messages of "
                              f"checks.input_roles and the tool definitions; each text counts "
                              f"at least {ITEM_CHARS}); policy {policy.name!r} checks at most "
                              f"{policy.checks.max_chars} (checks.max_chars)",
                              param="messages", code="check_too_large")


def _joined(value: Mapping[str, Any]) -> str:
    """Every readable string in ``value``, one a line, in order: strings at any depth but
    the ids under ``NOT_TEXT_FIELDS``, the property names of a parameter schema, and every
    other key that is no label (``_is_key_label``): the keys of a field the gateway does not
    know go upstream too. Iterative, so that nesting
    cannot exhaust the stack."""
    return "\n".join(_strings(value))


def _strings(value: object) -> Iterator[str]:
    stack: list[tuple[object, str | None]] = [(value, None)]
    while stack:
        item, key = stack.pop()
        if isinstance(item, str):
            if item and (key not in NOT_TEXT_FIELDS or not is_id(item)):
                yield item
        elif isinstance(item, Mapping):
            if key == "properties":  # a JSON Schema's property names are words the model reads
                yield from (str(name) for name in item)
            else:
                yield from (name for name in item if isinstance(name, str)
                            and not _is_key_label(name))
            stack.extend((inner, str(name)) for name, inner in reversed(list(item.items())))
        elif isinstance(item, list):
            stack.extend((inner, key) for inner in reversed(item))


def _is_key_label(key: str) -> bool:
    """Whether ``key`` is a label (``KEY_LABEL``, ``KEY_LABEL_WORDS`` words at most: a field's
    name, a schema keyword) rather than words the judge must read."""
    return (not key or KEY_LABEL.fullmatch(key) is not None
            and len(_KEY_WORDS.findall(key)) <= KEY_LABEL_WORDS)
