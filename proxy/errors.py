"""The gateway's errors, each with its HTTP status and OpenAI error envelope.

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── UnknownPolicyRequested    400 invalid_request_error (param: X-Vilmo-Policy)
    │   └── ContentBlocked            400 invalid_request_error (code: content_filter)
    ├── AuthenticationFailed          401 authentication_error
    ├── PolicyOverrideForbidden       403 permission_error
    ├── ModelNotFound                 404 invalid_request_error (code: model_not_found)
    ├── PayloadTooLarge               413 invalid_request_error
    ├── UpstreamRateLimited           429 rate_limit_error
    ├── UpstreamFailed                502 upstream_error
    ├── GuardFailed                   503 guard_error (the value check failed, on_error: closed)
    ├── UpstreamTimeout               504 timeout_error
    │   └── StreamTimeout             504 timeout_error (code: stream_timeout)
    └── ClientClosed                  499 (the client left; recorded, never seen by anyone)

Foreign errors are mapped where they enter: LiteLLM's by ``map_upstream_errors``. Messages
pass through ``Redactor`` so upstream secrets never reach a client or a log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error the gateway answers with an OpenAI error envelope."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnknownPolicyRequested(InvalidRequest):
    pass


class ContentBlocked(InvalidRequest):
    """The policy blocks this request or reply and asks for an error, not a refusal reply."""


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"


class PolicyOverrideForbidden(GatewayError):
    status = 403
    type = "permission_error"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"


class UpstreamRateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"


class UpstreamFailed(GatewayError):
    status = 502
    type = "upstream_error"


class GuardFailed(GatewayError):
    """The classifier or generator failed or timed out and the policy fails closed."""

    status = 503
    type = "guard_error"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"


class StreamTimeout(UpstreamTimeout):
    """A stream ran past the policy's ``streaming.stream_timeout_s``."""


class ClientClosed(GatewayError):
    """The client disconnected before the answer; its work was cancelled (nginx's 499)."""

    status = 499
    type = "client_closed"


class Redactor:
    """Replaces known secrets (upstream API keys) in text with a marker."""

    MIN_SECRET_LENGTH = 6  # shorter values would mangle ordinary words

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= self.MIN_SECRET_LENGTH},
                              key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


def install_log_redaction(redact: Redactor) -> None:
    """Redact secrets from every log record of the process, whichever logger or handler
    (uvicorn's, LiteLLM's) ends up writing it."""
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(redacting_factory)


@contextmanager
def map_upstream_errors(redact: Redactor, model: str) -> Iterator[None]:
    """Turn LiteLLM's (OpenAI-style) exceptions into GatewayErrors with the right status."""
    import openai  # LiteLLM's exceptions subclass the openai package's

    try:
        yield
    except GatewayError:
        raise
    except openai.APITimeoutError as exc:
        raise UpstreamTimeout(f"upstream for model {model!r} timed out",
                              code="upstream_timeout") from exc
    except openai.APIStatusError as exc:
        raise _from_status(exc.status_code, redact(_message_of(exc)), model) from exc
    except openai.APIConnectionError as exc:
        raise UpstreamFailed(f"could not reach the upstream for model {model!r}: "
                             f"{redact(_message_of(exc))}", code="upstream_unreachable") from exc
    except openai.OpenAIError as exc:
        status = getattr(exc, "status_code", 502)
        raise _from_status(int(status), redact(_message_of(exc)), model) from exc


def _from_status(status: int, message: str, model: str) -> GatewayError:
    if status == 429:
        return UpstreamRateLimited(f"upstream rate limit for model {model!r}: {message}",
                                   code="rate_limit_exceeded")
    if status in (408, 504):
        return UpstreamTimeout(f"upstream for model {model!r} timed out", code="upstream_timeout")
    if status in (400, 413, 422):
        return InvalidRequest(f"upstream rejected the request: {message}",
                              code="upstream_bad_request")
    # 401/403/404 from the upstream are the gateway's configuration, not the caller's fault.
    return UpstreamFailed(f"upstream error for model {model!r} (status {status}): {message}",
                          code="upstream_error")


def _message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message)[:500]
