"""Server-sent events in the shape the openai client parses: ``data: {json}`` then ``[DONE]``."""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import GatewayError

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One SSE event carrying a JSON object."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    """An error after the headers were sent: an error event (the stream then ends with DONE)."""
    return event(error.envelope())
