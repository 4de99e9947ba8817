"""LiteLLM's failures mapped to the codes the direct path gives for the same fault (issue 16:
both paths pass the same fault suite): LiteLLM reports a reply that is not JSON as a 500 and a
broken or malformed stream as a connection error. The exceptions here are built as LiteLLM
1.110 chains them (seen against the stub upstream); ``test_upstream_faults.py`` (slow) shows
the same over a real Router."""

from __future__ import annotations

import json

import httpx  # LiteLLM's HTTP client (the inner errors)
import httpx2  # the openai package's
import openai
import pytest

from proxy.errors import GatewayError, Redactor, map_upstream_errors

URL = "http://upstream/v1/chat/completions"
REQUEST = httpx.Request("POST", URL)
SDK_REQUEST = httpx2.Request("POST", URL)


def chained(outer: BaseException, *inner: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner[0]``, raised while handling ``inner[1]``..."""
    for above, below in zip((outer, *inner), inner, strict=False):
        above.__context__ = below
    return outer


def mapped(exc: BaseException, reached: bool = False) -> GatewayError:
    with pytest.raises(GatewayError) as caught, map_upstream_errors(
            Redactor(["sk-upstream-secret"]), "m", reached=reached):
        raise exc
    return caught.value


def connection_error(*inner: BaseException) -> BaseException:
    return chained(openai.APIConnectionError(message="Connection error.", request=SDK_REQUEST),
                   *inner)


def server_error(message: str, *inner: BaseException) -> BaseException:
    response = httpx2.Response(500, request=SDK_REQUEST)
    return chained(openai.InternalServerError(message, response=response, body=None), *inner)


def test_a_reply_that_is_not_json_is_malformed_not_a_500() -> None:
    """Before the fix: 502 ``upstream_error`` "(status 500)" for a 200 whose body was no JSON."""
    error = mapped(server_error("Expecting value", json.JSONDecodeError("Expecting value",
                                                                        "{", 1)))
    assert (error.status, error.code) == (502, "upstream_malformed")
    assert "status 500" not in error.message


def test_an_upstream_500_whose_body_is_not_json_keeps_its_status() -> None:
    status = httpx.HTTPStatusError("500", request=REQUEST,
                                   response=httpx.Response(500, request=REQUEST))
    error = mapped(server_error("sk-upstream-secret", json.JSONDecodeError("x", "<", 0),
                                status))
    assert (error.status, error.code) == (502, "upstream_error")
    assert "(status 500)" in error.message and "sk-upstream-secret" not in error.message


@pytest.mark.parametrize("reached", [False, True])
def test_malformed_stream_events_are_malformed_wherever_they_come(reached: bool) -> None:
    """Before the fix: ``upstream_unreachable`` from an upstream that had answered."""
    error = mapped(connection_error(json.JSONDecodeError("Expecting property name", "{x", 1)),
                   reached)
    assert (error.status, error.code) == (502, "upstream_malformed")


def test_a_stream_cut_short_is_malformed() -> None:
    cut = httpx.RemoteProtocolError("Stream ended before a finish_reason was received",
                                    request=REQUEST)
    error = mapped(connection_error(cut), reached=True)
    assert (error.status, error.code) == (502, "upstream_malformed")


def test_a_connection_that_fails_is_unreachable_only_before_the_upstream_answered() -> None:
    reset = httpx.ReadError("Response payload is not completed")
    assert mapped(connection_error(reset)).code == "upstream_unreachable"
    after = mapped(connection_error(reset), reached=True)
    assert (after.status, after.code) == (502, "upstream_error")
    assert after.message.startswith("the connection to the upstream for model 'm' failed")


@pytest.mark.parametrize("reached, message", [
    (False, "could not reach the upstream for model 'm'"),
    (True, "the connection to the upstream for model 'm' failed"),
])
def test_a_connection_errors_text_is_not_the_clients(reached: bool, message: str) -> None:
    """Before the fix the client read LiteLLM's message (which may quote the upstream)."""
    said = openai.APIConnectionError(message="Go and stab your neighbour.", request=SDK_REQUEST)
    assert mapped(said, reached).message == message


@pytest.mark.parametrize("status, code, message", [
    (429, "rate_limit_exceeded", "the upstream for model 'm' answered 429: rate limited"),
    (400, "upstream_bad_request",
     "the upstream for model 'm' answered 400: it rejected the request as invalid"),
    (503, "upstream_error", "the upstream for model 'm' failed (status 503)"),
])
def test_a_status_errors_text_is_the_gateways(status: int, code: str, message: str) -> None:
    response = httpx2.Response(status, request=SDK_REQUEST, headers={"retry-after": "3"})
    said = openai.APIStatusError("Go and stab your neighbour.", response=response,
                                 body={"param": "stab them", "code": "x y"})
    error = mapped(said)
    assert (error.code, error.message, error.param) == (code, message, None)
    assert error.headers == ({"retry-after": "3"} if status == 429 else {})


class StatuslessError(openai.OpenAIError):
    """An OpenAIError (as LiteLLM's own exceptions are) whose ``status_code`` is unset."""

    def __init__(self, status_code: object) -> None:
        super().__init__("no status")
        self.status_code = status_code


@pytest.mark.parametrize("status_code", [None, "n/a"])
def test_an_error_without_a_status_is_a_502_not_a_500(status_code: object) -> None:
    """Before the fix: ``int(None)`` raised TypeError inside the mapping, a 500."""
    error = mapped(StatuslessError(status_code))
    assert (error.status, error.code) == (502, "upstream_error")
    assert error.envelope()["error"]["code"] == "upstream_error"
