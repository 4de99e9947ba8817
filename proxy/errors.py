"""The gateway's errors, each with its HTTP status and OpenAI error envelope.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── UnknownPolicyRequested    400 invalid_request_error (param: X-Vilmo-Policy)
    │   └── ContentBlocked            400 invalid_request_error (code: content_filter)
    ├── AuthenticationFailed          401 authentication_error
    ├── PolicyOverrideForbidden       403 permission_error
    ├── AdminForbidden                403 permission_error (a client key on /admin)
    ├── ModelNotFound                 404 invalid_request_error (code: model_not_found)
    ├── NotFound                      404 invalid_request_error (an admin resource)
    ├── PayloadTooLarge               413 invalid_request_error
    ├── UpstreamRateLimited           429 rate_limit_error (Retry-After passed on)
    ├── KeyRateLimited                429 rate_limit_error (a virtual key's rpm/tpm; Retry-After)
    ├── UpstreamFailed                502 upstream_error
    ├── UpstreamUnavailable           503 upstream_error (LiteLLM's cooldown after failures)
    ├── GuardFailed                   503 guard_error (the value check failed, on_error: closed)
    ├── StoreDown                     503 store_error (the state store is unreachable)
    ├── UpstreamTimeout               504 timeout_error
    │   └── StreamTimeout             504 timeout_error (code: stream_timeout)
    └── ClientClosed                  499 (the client left; recorded, never seen by anyone)

Foreign errors are mapped where they enter: LiteLLM's by ``map_upstream_errors``, the direct
path's (httpx's, and the upstream's own error replies) by ``map_http_errors`` and
``upstream_status_error``, each with a fixed text the gateway writes: the upstream's message is
text nothing checked, so it goes to the log only (``upstream_said``: redacted by ``Redactor``,
cut, one line); of a 400 its ``param`` and ``code`` reach the client when they are short
identifiers (the ``code`` only when OpenAI's: ``proxy.upstream_codes``), of a 429 its
Retry-After as bounded seconds (``proxy.upstream_hints``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from proxy.protocol import error_envelope
from proxy.redaction import REDACTED as REDACTED  # noqa: PLC0414 - re-exported, as before
from proxy.redaction import Redactor as Redactor  # noqa: PLC0414 - re-exported
from proxy.upstream_codes import litellm_refused, passed_code
from proxy.upstream_hints import error_label
from proxy.upstream_hints import retry_after as retry_after_header
from proxy.upstream_log import upstream_said
from proxy.wellformed import well_formed


class GatewayError(Exception):
    """An error the gateway answers with an OpenAI error envelope."""
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        message = well_formed(message)  # an upstream's text: its envelope must encode
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        """Response headers that go with the error (e.g. Retry-After)."""

    def envelope(self) -> dict[str, Any]:
        return error_envelope(self.message, self.type, self.param, self.code)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnknownPolicyRequested(InvalidRequest):
    pass


class PolicyUnavailable(GatewayError):
    """The policy the gateway itself chose (the key's binding) is not loaded: its file was
    removed or never loaded. The operator's to fix, not the client's request."""

    status = 503


class ContentBlocked(InvalidRequest):
    """The policy blocks this request or reply and asks for an error, not a refusal reply."""


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"


class PolicyOverrideForbidden(GatewayError):
    status = 403
    type = "permission_error"


class AdminForbidden(GatewayError):
    status = 403
    type = "permission_error"


class MetricsForbidden(GatewayError):
    """A client key on ``/metrics``, which names every tenant's key and its usage: it wants the
    metrics key or the admin key."""

    status = 403
    type = "permission_error"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class StoreDown(GatewayError):
    status = 503
    type = "store_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class UpstreamRateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"


class KeyRateLimited(GatewayError):
    """A virtual key is over its requests or tokens per minute (code: rpm, tpm, or store when
    the store is down and limits fail closed)."""

    status = 429
    type = "rate_limit_error"


class UpstreamFailed(GatewayError):
    status = 502
    type = "upstream_error"


class UpstreamUnavailable(GatewayError):
    """LiteLLM holds every deployment of the model back after recent failures."""

    status = 503
    type = "upstream_error"


class GuardFailed(GatewayError):
    """The classifier or generator failed or timed out and the policy fails closed."""

    status = 503
    type = "guard_error"
    seconds: float | None = None
    """What the failed step took (the instruction step's, for its audit record), if known."""


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"


class StreamTimeout(UpstreamTimeout):
    """A stream ran past the policy's ``streaming.stream_timeout_s``."""


class ClientClosed(GatewayError):
    """The client disconnected before the answer; its work was cancelled (nginx's 499)."""

    status = 499
    type = "client_closed"


def install_log_redaction(redact: Redactor) -> None:
    """Redact secrets from every log record of the process, whichever logger or handler
    (uvicorn's, LiteLLM's) ends up writing it, tracebacks included."""
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if isinstance(record.args, tuple):  # each argument whole, before ``%.200s`` cuts it
            record.args = tuple(redact(str(a)) if isinstance(a, str | BaseException) else a
                                for a in record.args)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(redacting_factory)


@contextmanager
def map_upstream_errors(redact: Redactor, model: str, *, reached: bool = False,
                        wildcard: bool = False) -> Iterator[None]:
    """Turn LiteLLM's exceptions into GatewayErrors with the right status and a fixed text;
    the upstream's (LiteLLM's) message goes to the log only (``upstream_said``).

    LiteLLM reports a reply that is not JSON as a 500 and a broken or malformed stream as a
    connection error; they are mapped as the direct path maps them (``map_http_errors``,
    ``proxy.relay``): ``upstream_malformed`` for what the upstream sent, ``upstream_error`` for
    a connection that failed once the upstream answered (``reached``: the stream was open),
    ``upstream_unreachable`` only for one that never did. ``wildcard``: the model's entry is a
    pattern (``*``), so the upstream's 404 is the caller's unknown model (``_from_status``)."""
    import openai  # LiteLLM's exceptions subclass the openai package's
    from litellm.types.router import RouterRateLimitError

    from proxy.upstream import MEDIA_URL_REFUSED, no_media_url
    from proxy.upstream_bounds import too_large_as_502

    try:
        with too_large_as_502(model):  # a reply cut at its bounds: 502 upstream_too_large
            yield
    except GatewayError:
        raise
    except RouterRateLimitError as exc:  # LiteLLM's own: no deployment may be called now
        upstream_said(redact, model, "no deployment free", str(exc))
        retry = {"retry-after": str(max(1, math.ceil(exc.cooldown_time)))}
        if exc.all_deployments_in_cooldown:
            raise UpstreamUnavailable(
                f"the upstream for model {model!r} failed recently and is cooling down; "
                f"retry in {retry['retry-after']} s", code="upstream_unavailable",
                headers=retry) from None
        raise UpstreamRateLimited(f"the gateway's rate limit for model {model!r}",
                                  code="rate_limit_exceeded", headers=retry) from None
    except openai.APITimeoutError as exc:
        upstream_said(redact, model, "timed out", _message_of(exc))
        raise UpstreamTimeout(f"upstream for model {model!r} timed out",
                              code="upstream_timeout") from exc
    except (openai.APIStatusError, openai.APIConnectionError) as exc:
        if (malformed := _malformed_reply(exc)) is not None:
            upstream_said(redact, model, "malformed", f"it {malformed}")
            raise UpstreamFailed(f"the upstream for model {model!r} {malformed}",
                                 code="upstream_malformed") from exc
        if isinstance(exc, openai.APIConnectionError):
            upstream_said(redact, model, "connection failed", _message_of(exc))
            if reached:
                raise UpstreamFailed(f"the connection to the upstream for model {model!r} "
                                     "failed", code="upstream_error") from exc
            raise UpstreamFailed(f"could not reach the upstream for model {model!r}",
                                 code="upstream_unreachable") from exc
        upstream_said(redact, model, f"status {exc.status_code}", _message_of(exc))
        if MEDIA_URL_REFUSED in _message_of(exc):  # LiteLLM's own 400, the gateway's reason
            raise InvalidRequest(no_media_url(model), code="upstream_bad_request") from exc
        if (own := litellm_refused(exc, model)) is not None:  # nothing sent: not upstream's
            raise InvalidRequest(own[0], param=own[1], code="unsupported_parameter") from exc
        error = _from_status(exc.status_code, model, redact, *_labels_of(exc),
                             wildcard=wildcard)
        if isinstance(error, UpstreamRateLimited):
            error.headers = retry_after_header(exc.response.headers.get("retry-after"))
        raise error from exc
    except openai.OpenAIError as exc:
        code = getattr(exc, "status_code", None)  # None on some of LiteLLM's: a 502
        status = code if isinstance(code, int) else 502
        upstream_said(redact, model, f"status {status}", _message_of(exc))
        raise _from_status(status, model, redact, wildcard=wildcard) from exc
    except UnicodeError as exc:  # LiteLLM's Router fails on an upstream's lone surrogate itself
        upstream_said(redact, model, "malformed", "it sent text that is not valid Unicode")
        raise UpstreamFailed(f"the upstream for model {model!r} sent text that is not valid "
                             "Unicode", code="upstream_malformed") from exc


STREAM_CUT_SHORT = "Stream ended before a finish_reason"
"""LiteLLM's message (an ``httpx.RemoteProtocolError`` it raises itself) for a stream that
ended with no choice finished: what the direct path calls ``upstream_malformed``."""

REPLY_NOT_READ = ("Invalid response object ", "LiteLLM: provider returned ")
"""LiteLLM's messages for a reply it could not read as a chat completion (choices not a list,
a choice or message not an object): the direct path's ``upstream_malformed``
(``proxy.upstream.checked_choices``). Its stream wrapper's bare ``AttributeError`` on such
chunks cannot be told from a fault of its own: those stay ``upstream_error``."""


def _labels_of(exc: BaseException) -> tuple[object, object]:
    """The upstream's ``param`` and ``code`` of a LiteLLM error: its own, else those of the
    error it was raised from (LiteLLM keeps them on a 400, not on a 404: the openai client's
    error below it has them), each the first one found; not yet vetted."""
    found: dict[str, object] = {}
    cause: BaseException | None = exc
    for _ in range(20):
        if cause is None or len(found) == 2:
            break
        body = getattr(cause, "body", None)
        for name in ("param", "code"):
            value = getattr(cause, name, None)
            if not isinstance(value, str) and isinstance(body, dict):
                value = body.get(name)
            if isinstance(value, str):
                found.setdefault(name, value)
        cause = cause.__cause__ or cause.__context__
    return found.get("param"), found.get("code")


def _malformed_reply(exc: BaseException) -> str | None:
    """What was wrong with what the upstream sent, when LiteLLM's error comes from that: a
    JSON decoding error (and no HTTP error status, whose body may be anything), a stream cut
    short, or a reply LiteLLM could not read as a chat completion. None for every other
    failure."""
    import json

    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain and len(chain) < 20:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(type(e).__name__ == "HTTPStatusError" for e in chain):  # httpx's, or openai's httpx2
        return None
    if any(isinstance(e, json.JSONDecodeError) for e in chain):
        return "sent a reply or stream event that is not JSON"
    if any(STREAM_CUT_SHORT in str(e) for e in chain):
        return "sent a stream that ended before a finish_reason"
    if any(marker in str(e) for e in chain for marker in REPLY_NOT_READ):
        return "sent a reply that is not a chat completion"
    return None


@contextmanager
def map_http_errors(redact: Redactor, model: str) -> Iterator[None]:
    """Turn httpx's exceptions on the direct path into GatewayErrors, as ``map_upstream_errors``
    does LiteLLM's: a timeout is 504, anything else on the wire 502."""
    import httpx

    try:
        yield
    except GatewayError:
        raise
    except httpx.TimeoutException as exc:
        upstream_said(redact, model, "timed out", type(exc).__name__)
        raise UpstreamTimeout(f"upstream for model {model!r} timed out",
                              code="upstream_timeout") from exc
    except httpx.ConnectError as exc:
        upstream_said(redact, model, "connection failed", str(exc))
        raise UpstreamFailed(f"could not reach the upstream for model {model!r}",
                             code="upstream_unreachable") from exc
    except httpx.HTTPError as exc:  # reset, protocol error, bad encoding: the wire failed
        upstream_said(redact, model, "connection failed", type(exc).__name__)
        raise UpstreamFailed(f"the connection to the upstream for model {model!r} failed: "
                             f"{type(exc).__name__}", code="upstream_error") from exc


def upstream_status_error(status: int, message: str, model: str, retry_after: str | None,
                          redact: Redactor, param: object, code: object, *,
                          wildcard: bool = False) -> GatewayError:
    """The direct path's GatewayError for an upstream's HTTP error reply, as LiteLLM's are."""
    upstream_said(redact, model, f"status {status}", message)
    error = _from_status(status, model, redact, param, code, wildcard=wildcard)
    if isinstance(error, UpstreamRateLimited):
        error.headers = retry_after_header(retry_after)
    return error


def _from_status(status: int, model: str, redact: Redactor, param: object = None,
                 code: object = None, *, wildcard: bool = False) -> GatewayError:
    """The gateway's own error for an upstream's status: a fixed text (a 400's short labels
    too, ``proxy.upstream_hints.error_label``; its code as ``code`` when it is one of OpenAI's,
    ``proxy.upstream_codes``). A 3xx is a redirect neither path follows: not a completion. A
    404 is the caller's unknown model (404 ``model_not_found``, which a client does not retry)
    when the upstream says so by its code, or when the model's entry is a pattern
    (``wildcard``: ``*`` sends the caller's name as it is); otherwise, as 401 and 403 are (the
    gateway's own key), the gateway's configuration: a 502."""
    if 300 <= status < 400:
        return UpstreamFailed(f"the upstream for model {model!r} did not answer with a chat "
                              "completion", code="upstream_malformed")
    if status == 429:
        return UpstreamRateLimited(f"the upstream for model {model!r} answered 429: "
                                   "rate limited", code="rate_limit_exceeded")
    if status in (408, 504):
        return UpstreamTimeout(f"upstream for model {model!r} timed out", code="upstream_timeout")
    label = error_label(code, redact)
    if status == 404 and (wildcard or label == "model_not_found"):
        return ModelNotFound(f"the upstream for model {model!r} does not serve it (404)",
                             param="model", code="model_not_found")
    if status in (400, 413, 422):
        labels = (("param", error_label(param, redact)), ("code", label))
        detail = ", ".join(f"{name}: {value}" for name, value in labels if value)
        return InvalidRequest(f"the upstream for model {model!r} answered {status}: it rejected "
                              "the request as invalid" + (f" ({detail})" if detail else ""),
                              code=passed_code(label) or "upstream_bad_request")
    # 401/403 (and a 404 not the model's) are the gateway's configuration, not the caller's.
    return UpstreamFailed(f"the upstream for model {model!r} failed (status {status})",
                          code="upstream_error")


LITELLM_NOTES = "\n\nLiteLLM: "
"""Where LiteLLM appends its advice for operators to an upstream's error message (which model
groups have fallbacks, what to configure): the gateway's configuration, not for clients."""


def _message_of(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc).split(LITELLM_NOTES, 1)[0]
