"""One log line per upstream failure, naming the request it failed.

An upstream's own error text may say anything, so it never reaches a client
(``proxy.errors``): it goes to the log, redacted, cut, on one line, with the request's id
(``current_request``, set by the chat route) so that an operator finds its audit record.
LiteLLM's Router logs lines of its own for each failed attempt; those are dropped
(``proxy.upstream.FirstLineOnly``), so each failure is this one line on either path.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING

from proxy.wellformed import well_formed

if TYPE_CHECKING:
    from proxy.errors import Redactor

log = logging.getLogger("proxy.errors")  # the name operators' filters know

current_request: ContextVar[str | None] = ContextVar("vilmo_request_id", default=None)
"""The id of the chat request being served (its audit record's), for the log line."""


def upstream_said(redact: Redactor, model: str, what: str, message: str) -> None:
    """Log the upstream's own error message (redacted, cut, one line), never the client's."""
    line = well_formed(" ".join(redact.cut(message).split()))  # a lone surrogate: U+FFFD
    request = current_request.get()
    log.warning("%sthe upstream for model %r failed (%s): %s",
                f"request {request}: " if request else "", model, what, line)
