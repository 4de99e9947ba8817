"""Lone surrogates and non-finite numbers out of upstream JSON, where it enters the gateway.

JSON may carry a lone surrogate as an escape (``"\\ud800"``), and Python's ``json.loads`` of
bytes takes one UTF-8-encoded too; neither is a character, so nothing can encode it as UTF-8
again: not the client's response, not the audit trail. Client requests with one are refused
(``proxy.admission.parse_body``); an upstream's reply has each replaced by U+FFFD (as a UTF-8
decoder does with bytes it cannot read), before the value judge reads it, so the judge and the
client see the same text.

Python's ``json`` also reads ``NaN``, ``Infinity`` and ``-Infinity``, which are no JSON, and
``1e400`` as infinite: a reply holding one could not be sent to the client (a 500), and a
stream chunk went on with it (as it came, or as ``json.dumps`` writes it back), which no client
can read. Upstream JSON holding one is refused (``NotFinite``; a 502 ``upstream_malformed``):
``parse_upstream`` refuses it as it reads the bytes (the direct path), ``make_well_formed`` in
a tree parsed elsewhere (LiteLLM's), in the walk that replaces the surrogates.

JSON may also give an object a key twice: ``parse_upstream_event`` says so, for the stream
events the direct path would relay as their bytes came (``proxy.relay``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""What JSON text holding a surrogate contains (an escape, or the UTF-8 form ``json.loads``
takes from bytes); valid pairs match too, so a match only means the tree must be walked."""
REPLACEMENT = "\ufffd"


def well_formed(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (the same object when none)."""
    if text.isascii() or LONE_SURROGATE.search(text) is None:
        return text
    return LONE_SURROGATE.sub(REPLACEMENT, text)


class NotFinite(ValueError):
    """Upstream JSON holding NaN or an infinity (the message names which)."""


def _refuse_constant(name: str) -> NoReturn:
    raise NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: a JSON number, but Python reads it as inf
        raise NotFinite(text)
    return value


_UPSTREAM_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def parse_upstream(raw: bytes) -> Any:
    """``json.loads(raw)`` (the same encodings, surrogates read the same way), but ``NaN``,
    ``Infinity``, ``-Infinity`` and a number too large for a float (``1e400``) raise
    ``NotFinite``. The decoder's hooks run only for those words and for numbers with a
    fraction or an exponent (rare in a chunk): other JSON is read at ``json.loads``'s speed."""
    return _UPSTREAM_DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


class DuplicateKeys(ValueError):
    """JSON with an object that has a key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) != len(pairs):
        raise DuplicateKeys
    return unique


_EVENT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float,
                                  object_pairs_hook=_unique_keys)


def parse_upstream_event(raw: bytes) -> tuple[Any, bool]:
    """``parse_upstream(raw)``, and whether no object in it has a key twice: Python keeps the
    last of equal keys, other parsers the first, so bytes with a key twice may read otherwise
    to a client than to the check, and must not be relayed as they came. The hook costs about a
    third of the parse (a 260-byte content chunk 11.4 -> 15.1 µs, interleaved in one run on a
    shared AMD EPYC); such JSON (rare) is parsed twice."""
    text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    try:
        return _EVENT_DECODER.decode(text), True
    except DuplicateKeys:
        return _UPSTREAM_DECODER.decode(text), False


def make_well_formed(tree: dict[str, Any] | list[Any], raw: bytes | None = None) -> bool:
    """Every string (keys too) in a parsed JSON tree made ``well_formed``, in place; True when
    something changed. A NaN or infinite number raises ``NotFinite``. ``raw``, the JSON text
    the tree was parsed by ``parse_upstream`` from (so it holds no such number), lets the walk
    be skipped when it cannot hold a surrogate (the common case). Walked without recursion."""
    if raw is not None and ((b"\\u" not in raw and b"\xed" not in raw)
                            or MAYBE_SURROGATE.search(raw) is None):
        return False
    changed = False
    stack: list[dict[str, Any] | list[Any]] = [tree]
    while stack:
        node: Any = stack.pop()
        places = enumerate(node) if isinstance(node, list) else list(node.items())
        for at, value in places:
            if isinstance(value, str) and (fixed := well_formed(value)) is not value:
                node[at] = fixed
                changed = True
            elif isinstance(value, dict | list):
                stack.append(value)
            elif type(value) is float and not math.isfinite(value):
                raise NotFinite(json.dumps(value))
            if isinstance(at, str) and (fixed_key := well_formed(at)) is not at:
                node[fixed_key] = node.pop(at)
                changed = True
    return changed
