"""What the gateway admits from a client's chat request, before the pipeline sees it.

    parse_body()  JSON object, valid Unicode, nesting at most ``MAX_JSON_DEPTH`` deep, every
                  number finite (NaN, Infinity and 1e400 are 400s naming the field) and every
                  integer within Python's 4,300 digits
    admit()       only ``protocol.FORWARDED_FIELDS`` (and the model's ``allowed_params``) go on;
                  others are dropped, or a 400 under ``strict_params``; ``n`` and ``max_tokens``
                  within the server's limits

Upstream settings (base URL, keys, headers, retries, timeouts) come only from the config.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from proxy.errors import InvalidRequest
from proxy.protocol import ChatCompletionRequest, UpstreamParams, forwarded, shown_name
from proxy.settings import GatewayConfig

MAX_JSON_DEPTH = 64
"""Deeper bodies are refused: no OpenAI request needs them, and recursion has to stop somewhere."""


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}",
                             code="invalid_json") from None
    except RecursionError:
        raise too_deep() from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidRequest(f"the request body has a number out of range: {exc}"[:200],
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    check_tree(data)
    try:  # JSON escapes can smuggle lone surrogates, which no upstream can be sent
        if may_hold_surrogates(body):
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"the request body is not valid Unicode: {exc.reason}",
                             code="invalid_json") from None
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")


def may_hold_surrogates(body: bytes) -> bool:
    """Whether the parsed body may hold a surrogate: a UTF-8 body has one only from a
    ``\\uD800``-``\\uDFFF`` escape or their bytes (``json.loads`` decodes with
    ``surrogatepass``). Writing the tree out to look costs a fifth of parsing a body, holding
    the GIL; searching the bytes costs a hundredth."""
    return (json.detect_encoding(body) != "utf-8" or _SURROGATE_ESCAPE.search(body) is not None
            or _SURROGATE_BYTES.search(body) is not None)


def check_tree(data: dict[str, Any]) -> None:
    """Depth and finite numbers, walked without recursion and without building each value's
    path (a 4 MiB body holds hundreds of thousands of values): the path only for the 400."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()  # depth: the path length of the node's values
        for value in node.values() if isinstance(node, dict) else node:
            if isinstance(value, dict | list):
                if value and depth >= MAX_JSON_DEPTH:
                    raise too_deep()
                stack.append((value, depth + 1))
            elif isinstance(value, float) and not math.isfinite(value):
                where = shown_name(".".join(str(p) for p in non_finite_path(data)))
                raise InvalidRequest(f"{where}: numbers must be finite (not NaN, Infinity or "
                                     "out of the float range)", param=where,
                                     code="invalid_request")


def non_finite_path(data: dict[str, Any]) -> tuple[str | int, ...]:
    """Where the first non-finite number in ``data`` is (``check_tree`` found one)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            return path
    return ()


def too_deep() -> InvalidRequest:
    return InvalidRequest(f"the request body is nested deeper than {MAX_JSON_DEPTH} levels",
                          code="invalid_json")


def admit(raw: dict[str, Any], body: ChatCompletionRequest, config: GatewayConfig,
          ) -> UpstreamParams:
    """The request as the pipeline may forward it (``raw`` is the body ``body`` validated)."""
    params, left_out = forwarded(raw, config.allowed_params(body.model))
    if left_out and config.strict_params:
        name = shown_name(left_out[0])  # a client's name, cut
        raise InvalidRequest(
            f"unsupported parameter {name!r}: the gateway forwards only the OpenAI "
            "chat-completion parameters (and those the model's allowed_params name)",
            param=name, code="unsupported_parameter")
    limits = config.server
    if body.n is not None and body.n > limits.max_n:
        raise InvalidRequest(f"n: at most {limits.max_n} choices per request", param="n",
                             code="invalid_request")
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name)
        if value is not None and value > limits.max_tokens:
            raise InvalidRequest(f"{name}: at most {limits.max_tokens} on this gateway",
                                 param=name, code="invalid_request")
    return params
