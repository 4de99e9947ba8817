"""Lone surrogates out of upstream text, where upstream JSON enters the gateway.

JSON may carry a lone surrogate as an escape (``"\\ud800"``), and Python's ``json.loads`` of
bytes takes one UTF-8-encoded too; neither is a character, so nothing can encode it as UTF-8
again: not the client's response, not the audit trail. Client requests with one are refused
(``proxy.admission.parse_body``); an upstream's reply has each replaced by U+FFFD (as a UTF-8
decoder does with bytes it cannot read), before the value judge reads it, so the judge and the
client see the same text.
"""

from __future__ import annotations

import re
from typing import Any

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


def replace_lone_surrogates(tree: dict[str, Any] | list[Any], raw: bytes | None = None) -> bool:
    """Every string (keys too) in a parsed JSON tree made ``well_formed``, in place; True when
    something changed. ``raw``, the JSON text the tree was parsed from, lets the walk be
    skipped when it cannot hold a surrogate (the common case). Walked without recursion."""
    if raw is not None and ((b"\\u" not in raw and b"\xed" not in raw)
                            or MAYBE_SURROGATE.search(raw) is None):
        return False
    changed = False
    stack: list[dict[str, Any] | list[Any]] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str) and (fixed := well_formed(value)) is not value:
                    node[index] = fixed
                    changed = True
                elif isinstance(value, dict | list):
                    stack.append(value)
            continue
        for key, value in list(node.items()):
            if isinstance(value, str) and (fixed := well_formed(value)) is not value:
                node[key] = fixed
                changed = True
            elif isinstance(value, dict | list):
                stack.append(value)
            if (fixed_key := well_formed(key)) is not key:
                node[fixed_key] = node.pop(key)
                changed = True
    return changed
