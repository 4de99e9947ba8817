"""Server-sent events in the shape the openai client parses: ``data: {json}`` then ``[DONE]``.

``sse_body`` sends a stream outcome: every chunk (its usage only when the client asked for it),
then (when asked) the ``vilmo`` note, then ``[DONE]``; an error after the headers becomes an error event before the ``[DONE]``. When it
ends, however it ends, it reports the reply's last judgement and the status (``499``: the
client left) to the stream's ``finish``, which records the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping

from proxy.chunks import chunk_like, for_client
from proxy.errors import ClientClosed, GatewayError, UpstreamFailed
from proxy.outcome import Judged, Stream, verdict_of
from proxy.relay import wire_bytes

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"

def event(payload: Mapping[str, object]) -> bytes:
    """One SSE event carrying a JSON object."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    """An error after the headers were sent: an error event (the stream then ends with DONE)."""
    return event(error.envelope())


async def sse_body(stream: Stream, request_id: str, annotate: bool) -> AsyncIterator[bytes]:
    status, code = "200", None
    reply = stream.facts.reply
    try:
        wants_usage = stream.call.client_wants_usage
        async for item in stream.items:
            if isinstance(item, Judged):
                reply = item.reply
            elif (sent := for_client(item, wants_usage)) is not None:
                # an upstream chunk nothing changed goes out as it came (direct path)
                yield wire_bytes(sent) or event(sent)
        verdict = verdict_of(stream.facts.shown)
        if annotate and stream.mode in ("buffer", "off") and verdict is not None:
            note = {"mode": stream.mode, "guard": stream.guard,
                    "regenerations": len(stream.facts.attempts), **verdict.as_dict()}
            yield event({**chunk_like({"id": request_id}, None), "vilmo": note})
    except GatewayError as exc:
        status, code = str(exc.status), exc.code
        yield error_event(exc)
    except asyncio.CancelledError:
        status, code = str(ClientClosed.status), "client_closed"  # as a plain reply's
        raise
    except Exception as exc:  # an unmapped failure must still end the stream properly
        log.error("stream failed (request %s): %s: %s", request_id, type(exc).__name__, exc)
        log.debug("traceback of the stream failure", exc_info=exc)  # one line above; this too
        failure = UpstreamFailed("the upstream stream failed", code="upstream_error")
        status, code = str(failure.status), failure.code
        yield error_event(failure)
    finally:
        await stream.items.aclose()  # type: ignore[attr-defined]
        stream.finish(reply, status, code)
    yield DONE
