"""Server-sent events in the shape the openai client parses: ``data: {json}`` then ``[DONE]``.

``sse_body`` sends a stream outcome: every chunk (its usage only when the client asked for it),
then (when asked: ``X-Vilmo-Annotate: body``) the ``vilmo`` note, then ``[DONE]``; an error
after the headers becomes an error event before the ``[DONE]``. When it ends, however it ends,
it reports the reply's last judgement and the status (``499``: the client left) to the
stream's ``finish``, which records the request. A monitor stream the client leaves is judged
first (the text relayed so far, in a task of its own that the app's shutdown waits for:
``proxy.late``), then recorded with that verdict.

The note: buffer (and unchecked) streams carry the verdict the headers carry; a chunked
stream's headers leave before any check, so its note carries the last ``Judged`` verdict (the
whole-reply verdict) in a last chunk shaped as monitor mode's (``choices: []``); a monitor
stream always ends with its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from proxy.chunks import chunk_like, for_client
from proxy.errors import ClientClosed, GatewayError, UpstreamFailed
from proxy.late import LateWork
from proxy.outcome import (
    FAILED_OPEN,
    FailedOpen,
    Finish,
    Judged,
    Judgement,
    Stream,
    Unjudged,
    verdict_of,
)
from proxy.relay import wire_bytes
from proxy.upstream import Chunk
from vilmo.verdict import Verdict

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"

def event(payload: Mapping[str, object]) -> bytes:
    """One SSE event carrying a JSON object."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_event(error: GatewayError) -> bytes:
    """An error after the headers were sent: an error event (the stream then ends with DONE)."""
    return event(error.envelope())


def chunked_note(template: Chunk, reply: Judgement) -> bytes | None:
    """A chunked stream's verdict as monitor mode reports its own; None when never judged."""
    if not isinstance(reply, Verdict | FailedOpen):
        return None
    note: dict[str, object] = {"mode": "chunked",
                               "guard": "ok" if isinstance(reply, Verdict) else "error"}
    if isinstance(reply, Verdict):
        note.update(reply.as_dict())
    return event({**chunk_like(template, None), "choices": [], "vilmo": note})


async def sse_body(stream: Stream, request_id: str, annotate: bool, late: LateWork,
                   ) -> AsyncIterator[bytes]:
    """``late`` runs the judgement of a monitor stream the client left."""
    status, code = "200", None
    reply = stream.facts.reply
    unjudged: Unjudged | None = None  # monitor: what judges the text relayed so far
    first: Chunk | None = None  # the chunked note's id, model and created are the stream's
    try:
        wants_usage = stream.call.client_wants_usage
        async for item in stream.items:
            if isinstance(item, Judged):
                reply, unjudged = item.reply, None
            elif isinstance(item, Unjudged):
                unjudged = item
            elif (sent := for_client(item, wants_usage)) is not None:
                first = item if first is None else first
                # an upstream chunk nothing changed goes out as it came (direct path)
                yield wire_bytes(sent) or event(sent)
        verdict = verdict_of(stream.facts.shown)
        if annotate and stream.mode in ("buffer", "off") and verdict is not None:
            note = {"mode": stream.mode, "guard": stream.guard,
                    "regenerations": len(stream.facts.attempts), **verdict.as_dict()}
            yield event({**chunk_like({"id": request_id}, None), "vilmo": note})
        elif annotate and stream.mode == "chunked" and (
                chunked := chunked_note(first or {"id": request_id}, reply)) is not None:
            yield chunked
    except GatewayError as exc:
        status, code = str(exc.status), exc.code
        yield error_event(exc)
    except (asyncio.CancelledError, GeneratorExit):  # the client left (cancelled, or closed
        status, code = str(ClientClosed.status), "client_closed"  # at a yield): a plain reply's
        raise
    except Exception as exc:  # an unmapped failure must still end the stream properly
        log.error("stream failed (request %s): %s: %s", request_id, type(exc).__name__, exc)
        log.debug("traceback of the stream failure", exc_info=exc)  # one line above; this too
        failure = UpstreamFailed("the upstream stream failed", code="upstream_error")
        status, code = str(failure.status), failure.code
        yield error_event(failure)
    finally:
        try:
            await stream.items.aclose()  # type: ignore[attr-defined]
        finally:  # recorded even if closing is cancelled again (the client left)
            if unjudged is not None and status == str(ClientClosed.status):
                judge_then_finish(late, unjudged.judge, stream.finish, status, code,
                                  request_id)
            else:
                stream.finish(reply, status, code)
    yield DONE


def judge_then_finish(late: LateWork, judge: Callable[[], Awaitable[Judgement]],
                      finish: Finish, status: str, code: str | None, request_id: str) -> None:
    """A monitor stream the client left: the text relayed so far is judged, then recorded
    with that verdict (as a stream that ends early by an error is). In a task of its own
    (``late``: the shutdown waits for it): the response's task is cancelled (and may be
    cancelled again at each wait) once the client has gone. The check is bounded by
    ``checks.timeout_s`` (``proxy.guard``); whatever happens, the request is recorded,
    unjudged (failed open) at worst, even when the task is cancelled."""
    async def run() -> None:
        reply: Judgement = FAILED_OPEN
        try:
            reply = await judge()
        except Exception as exc:  # noqa: BLE001 - the record must still be made
            log.error("judging the stream the client left failed (request %s): %s: %s",
                      request_id, type(exc).__name__, exc)
        finally:
            finish(reply, status, code)

    late.spawn(run(), f"the late judgement of request {request_id}")
