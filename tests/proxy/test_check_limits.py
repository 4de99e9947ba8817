"""How much text one check reads (issue 12, point 2): over the policy's ``checks.max_chars``
the check endpoint answers 413 and a reply is handled by ``on_error``; under it, every part of
a long text is read. Before the fix any size was scored in one classifier call, holding the
policy's only classifier thread for as long as it took (a 1 MB check: 72 s of 503s)."""

from __future__ import annotations

import httpx
from conftest import ADMIN_KEY
from streams import plain
from stub_upstream import StubUpstream

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
LONG_CALM = "Talk to him calmly tomorrow and tell him how you feel. " * 10  # 550 characters


def test_check_endpoint_refuses_text_over_the_limit(gateway: str, stub: StubUpstream) -> None:
    response = httpx.post(f"{gateway}/values/check", headers=HEADERS, json={
        "text": LONG_CALM, "policy": "g-small-closed"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "check_too_large" and error["param"] == "text"
    assert error["type"] == "invalid_request_error" and "300" in error["message"]
    within = httpx.post(f"{gateway}/values/check", headers=HEADERS, json={
        "text": LONG_CALM[:250], "policy": "g-small-closed"})
    assert within.status_code == 200 and within.json()["guard"] == "ok"


def test_a_reply_over_the_limit_follows_on_error(gateway: str, stub: StubUpstream) -> None:
    stub.reply = LONG_CALM + "Then punch him."
    closed = plain(gateway, "g-small-closed")
    assert closed.status_code == 503 and "punch" not in closed.text
    assert closed.json()["error"]["code"] == "check_too_large"
    opened = plain(gateway, "g-small-open")
    assert opened.status_code == 200 and opened.headers["x-vilmo-guard"] == "error"


def test_every_part_of_a_long_reply_is_checked(gateway: str, stub: StubUpstream) -> None:
    stub.reply = LONG_CALM * 20 + "Then punch him."  # 11,000 characters: several parts
    response = plain(gateway, "g-block-buffer")
    assert response.json()["choices"][0]["finish_reason"] == "content_filter"
    assert "punch" not in response.text
