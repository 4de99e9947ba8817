"""Streamed replies as server-sent events.

Every stream ends with ``data: [DONE]``, also after an error in the middle (which becomes an
error event first), and is recorded when it ends. A client that goes away cancels the task
reading the upstream, and closing the chunk iterator closes the upstream connection. Stream
enforcement (buffer / chunked / monitor) will live here, reusing the pipeline's decisions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from proxy.audit import RequestRecord
from proxy.errors import GatewayError, UpstreamFailed
from proxy.pipeline import ChatStream, Services
from proxy.sse import DONE, error_event, event

log = logging.getLogger(__name__)

CLIENT_CLOSED = "499"


async def sse_events(stream: ChatStream, services: Services, record: RequestRecord,
                     ) -> AsyncIterator[bytes]:
    status, code = "200", None
    try:
        async for chunk in stream.chunks:
            yield event(chunk)
    except GatewayError as exc:
        status, code = str(exc.status), exc.code
        yield error_event(exc)
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    except Exception:  # an unmapped failure must still end the stream properly
        log.exception("stream failed (request %s)", record.request_id)
        failure = UpstreamFailed("the upstream stream failed", code="upstream_error")
        status, code = str(failure.status), failure.code
        yield error_event(failure)
    finally:
        await stream.chunks.aclose()  # type: ignore[attr-defined]
        services.record(record, status, code)
    yield DONE
