"""What counts against ``checks.max_chars`` is a text's length as sent (review rv4).

Before the fix the input check counted each text as the judge reads it (``proxy.judged_text``:
every decode level of its JSON escapes, bidi runs as shown), so JSON counted 1.4-2.8 times its
size: a coding agent's tool result of source files, well under ``max_chars`` as sent, was a 413
``check_too_large`` before the upstream was called (the reviewer's: 74,000 characters counted
103,000 against 100,000), and the check route and a JSON reply were refused the same way. Now a
text counts its length as sent without what renders as nothing (as before the judge read its
escapes), and what the judge reads of it is bounded apart: ``proxy.guard.READ_FACTOR`` times
that plus ``READ_EXTRA_CHARS``, past which the check is refused whatever ``on_error``.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from conftest import ADMIN_KEY
from streams import plain
from stub_upstream import StubUpstream

from proxy.guard import READ_EXTRA_CHARS, READ_FACTOR
from proxy.judged_text import judged_text, visible

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
MAX_CHARS = 100_000
"""The default ``checks.max_chars`` (policies ``g-input``, ``g-block-buffer``...)."""
CODE = "".join(f'def helper_{i}(value):\n    """Return the value doubled, for the report."""\n'
               f'    print("helper {i}: %s" % value)\n    return value * 2\n\n'
               for i in range(100))
FILES = json.dumps([{"path": f"src/module_{k}.py", "content": CODE} for k in range(6)])
"""A tool result of source files as JSON: 86,500 characters, read as 164,800."""
STACKED = "word " * 55 + "x\\u005cu005cu005cu0062y."
"""A sentence whose one escape reads other words at each of its five levels: read five times."""
CRAFTED = (STACKED + " ") * 68
"""20,400 characters read as 98,900: under ``max_chars`` either way, over the read bound."""


def _client(gateway: str, policy: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=ADMIN_KEY, max_retries=0,
                         default_headers={"X-Vilmo-Policy": policy})


def _tool_result(text: str) -> list[dict[str, object]]:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "read_files", "arguments": '{"paths": ["src/"]}'}}
    return [{"role": "user", "content": "Review these files for bugs."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": text}]


def test_the_texts_read_as_the_cases_need() -> None:
    assert len(visible(FILES)) < MAX_CHARS < len(judged_text(FILES))
    size, read = len(CRAFTED), len(judged_text(CRAFTED))
    assert READ_FACTOR * size + READ_EXTRA_CHARS < read < MAX_CHARS


def test_a_tool_result_of_json_counts_its_size_as_sent(gateway: str, stub: StubUpstream,
                                                       ) -> None:
    raw = _client(gateway, "g-input").chat.completions.with_raw_response.create(
        model="stub", messages=_tool_result(FILES))  # type: ignore[arg-type]
    assert raw.http_response.status_code == 200
    assert raw.headers["x-vilmo-guard"] == "ok"
    assert stub.received[-1].body["messages"][-1]["content"] == FILES


def test_the_check_route_counts_as_the_chat_route(gateway: str) -> None:
    for body in ({"text": FILES}, {"messages": _tool_result(FILES)},
                 {"messages": [{"role": "user", "content": FILES}]}):
        response = httpx.post(f"{gateway}/values/check", headers=HEADERS, timeout=60,
                              json={**body, "policy": "g-input"})
        assert response.status_code == 200, response.text
        assert response.json()["guard"] == "ok"


@pytest.mark.parametrize("policy", ["g-block-buffer", "g-open-buffer"])
def test_a_json_reply_counts_its_size_as_sent(gateway: str, stub: StubUpstream,
                                              policy: str) -> None:
    """The reply side follows the same rule: before, a JSON reply under ``max_chars`` as sent
    was a 503 ``check_too_large`` under either ``on_error``."""
    stub.reply = FILES
    response = plain(gateway, policy)
    assert response.status_code == 200, response.text
    assert response.headers["x-vilmo-guard"] == "ok"
    assert response.json()["choices"][0]["message"]["content"] == FILES


def test_a_text_that_reads_far_more_than_its_size_is_refused(gateway: str,
                                                             stub: StubUpstream) -> None:
    """What the judge reads stays bounded: a text written to be read five times over is
    refused (413 as input or on the check route, a 503 as a reply), whatever ``on_error``."""
    with pytest.raises(openai.APIStatusError) as refused:
        _client(gateway, "g-input").chat.completions.create(
            model="stub", messages=[{"role": "user", "content": CRAFTED}])
    assert refused.value.status_code == 413 and stub.received == []
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "check_too_large"
    assert f"{READ_FACTOR} times" in error["message"]
    response = httpx.post(f"{gateway}/values/check", headers=HEADERS, timeout=60,
                          json={"text": CRAFTED, "policy": "g-input"})
    assert response.status_code == 413 and response.json()["error"]["param"] == "text"
    stub.reply = CRAFTED
    for policy in ("g-block-buffer", "g-open-buffer"):
        reply = plain(gateway, policy)
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "check_too_large"
        assert "word" not in reply.text
