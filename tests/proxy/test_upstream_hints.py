"""The two things of an upstream's error reply that reach a client, on both paths: a 429's
Retry-After and a rejected request's ``param`` and ``code`` (``proxy.upstream_hints``).

Before the fix both were side channels for the upstream's text: a Retry-After passed verbatim
when it began with an HTTP date (``email.utils`` ignores what follows it: a sentence, the
upstream key, an internal URL), and ``param``/``code`` passed when they matched a label
pattern that admits API keys, URLs and ``go_and_stab_them_all``, unredacted. Now a
Retry-After is re-emitted as whole seconds (at most an hour) from the value it parsed to, and
a label is redacted first and shown only when it is a short identifier.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from fault_gateway import UPSTREAM_KEY, UPSTREAM_PATHS, served
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from stub_upstream import ServerThread

from proxy.errors import Redactor
from proxy.settings import GatewayConfig

MAX_RETRY_AFTER_S = 3600
"""The longest Retry-After passed on (``proxy.upstream_hints.MAX_RETRY_AFTER_S``)."""
LEAK = " go and stab him; your key {key} internal http://10.0.0.7:8000/v1"
"""What the upstream appends to its Retry-After date."""
ANSWERS: dict[str, tuple[str, object, object]] = {}
"""What the upstream answers a model: Retry-After, or a 400's ``param`` and ``code``."""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    async def chat(request: Request) -> JSONResponse:
        model = str((await request.json())["model"])
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        kind, param, code = ANSWERS[model]
        if kind == "429":
            return JSONResponse({"error": {"message": "slow down", "type": "rate"}},
                                status_code=429,
                                headers={"retry-after": str(param).format(key=key)})
        fields = {"param": param, "code": key if code == "KEY" else code}
        return JSONResponse({"error": {"message": "bad", "type": "invalid_request_error",
                                       **fields}}, status_code=400)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture(scope="module", params=UPSTREAM_PATHS)
def gateway(request: pytest.FixtureRequest, upstream: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    policies: Path = tmp_path_factory.mktemp("hints") / "policies"
    policies.mkdir()
    (policies / "passthrough.yaml").write_text(
        "name: passthrough\nvalues:\n  mft.care: {}\nchecks: {output: false}\n")
    params = {"api_base": f"{upstream}/v1", "api_key": UPSTREAM_KEY}
    config = GatewayConfig.model_validate({
        "model_list": [{"model_name": "*", "litellm_params": {"model": "openai/*", **params}}],
        "router_settings": {"timeout": 5, "disable_cooldowns": True},
        "policy_dir": str(policies), "default_policy": "passthrough",
        "server": {"policy_reload_interval_s": 0},
        "store": {"path": str(policies.parent / "state" / "state.db")},
    })
    with served(config, str(request.param)) as (url, _):
        yield url


def ask(gateway: str, model: str) -> httpx.Response:
    return httpx.post(f"{gateway}/v1/chat/completions", timeout=15, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "sent", "shown"), [
    ("ra-seconds", "7", "7"),
    ("ra-long", "86400", str(MAX_RETRY_AFTER_S)),
    ("ra-date", "{in_a_minute}", "60"),
    ("ra-date-and-text", "{in_a_minute} stab {key}", "60"),
    ("ra-date-and-more", "{in_a_minute}" + LEAK, None),  # no date is 64 characters long
    ("ra-past-and-text", "Wed, 21 Oct 2015 07:28:00 GMT go and stab him", "0"),
    ("ra-text", "stab {key}", None),
])
def test_retry_after_is_re_emitted_as_bounded_seconds(
        gateway: str, model: str, sent: str, shown: str | None, stream: bool) -> None:
    in_a_minute = formatdate(time.time() + 60, usegmt=True)
    ANSWERS[model] = ("429", sent.replace("{in_a_minute}", in_a_minute), None)
    response = httpx.post(f"{gateway}/v1/chat/completions", timeout=15, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429, response.text
    got = response.headers.get("retry-after")
    if shown == "60":  # a date is counted from now, in whole seconds
        assert got is not None and 57 <= int(got) <= 61, got
    else:
        assert got == shown
    assert "stab" not in response.text + str(got) and UPSTREAM_KEY not in str(got)


@pytest.mark.parametrize(("model", "param", "code", "shown"), [
    ("bad-labels", "max_tokens", "context_length_exceeded",
     " (param: max_tokens, code: context_length_exceeded)"),
    ("bad-index", "messages.[0].content", "string_above_max_length",
     " (param: messages.[0].content, code: string_above_max_length)"),
    ("bad-sentence", "go_and_stab_them_all", "KEY", ""),
    ("bad-url", "http://10.0.0.7:8000/v1", "a@b.example", ""),
    ("bad-camel", "IWillStabYouTonight", "sk-other-abcDEF1234567890xyz", ""),
])
def test_a_rejected_requests_labels_are_short_identifiers_or_nothing(
        gateway: str, model: str, param: str, code: str, shown: str) -> None:
    ANSWERS[model] = ("400", param, code)
    response = ask(gateway, model)
    assert response.status_code == 400, response.text
    error = json.loads(response.text)["error"]
    assert error["message"] == (f"the upstream for model {model!r} answered 400: it rejected "
                                "the request as invalid" + shown)
    # a label is the envelope's code (clients branch on it); else the gateway's own
    assert (error["param"], error["code"]) == (None, code if shown else "upstream_bad_request")
    assert "stab" not in response.text.lower() and UPSTREAM_KEY not in response.text


def test_retry_after_values() -> None:
    from proxy.upstream_hints import MAX_RETRY_AFTER_S, retry_after

    now = 1_700_000_000.0
    date = formatdate(now + 90, usegmt=True)
    assert MAX_RETRY_AFTER_S == globals()["MAX_RETRY_AFTER_S"]
    assert retry_after(" 12 ", now) == {"retry-after": "12"}
    assert retry_after("9" * 40, now) == {"retry-after": str(MAX_RETRY_AFTER_S)}
    assert retry_after(date, now) == {"retry-after": "90"}
    assert retry_after(date + " and then some text", now) == {"retry-after": "90"}
    assert retry_after(date.replace("GMT", "-0000"), now) == {"retry-after": "90"}
    assert retry_after(formatdate(now - 90, usegmt=True), now) == {"retry-after": "0"}
    assert retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) == {
        "retry-after": str(MAX_RETRY_AFTER_S)}
    for nothing in (None, "", "soon", "\u00b2", "-5", "1.5", date + " x" * 40):
        assert retry_after(nothing, now) == {}, nothing


def test_labels_are_redacted_first() -> None:
    from proxy.upstream_hints import error_label

    redact = Redactor(["abcdef"])
    assert error_label("max_tokens", redact) == "max_tokens"
    assert error_label("code_abcdef", redact) is None  # the secret inside, not the pattern
    for not_a_label in (None, 400, "", "a b", "x" * 65, "[redacted]", "messages[x]",
                        "sk-ab12cd34ef56", "one_two_three_four_five", "averyveryverylongword"):
        assert error_label(not_a_label, redact) is None, not_a_label
