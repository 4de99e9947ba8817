"""A 400's ``param`` names the client's field, never pydantic's internals: a union member's
tag (``messages.0.content.str``, ``stop.str``, ``tool_choice.literal['none','auto',...]``) or
a class name of the gateway's (``instance of ChatMessageIn`` in the message)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import InvalidRequest
from proxy.protocol import ChatCompletionRequest
from proxy.routes import validate

USER = {"role": "user", "content": "hi"}


def refused(**body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate(ChatCompletionRequest, {"model": "m", "messages": [USER], **body})
    return caught.value


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [1]}]}, "messages.0.content.0"),
    ({"messages": ["hi"]}, "messages.0"),
    ({"stop": 5}, "stop"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "messages.0.content.0.text"),
    ({"metadata": {"a": 1}}, "metadata.a"),  # a client's key is still named
    ({"web_search_options": {"user_location": {"type": "approximate",
                                               "approximate": {"city": 5}}}},
     "web_search_options.user_location.approximate.city"),
])
def test_param_is_the_field_path(body: dict[str, Any], param: str) -> None:
    error = refused(**body)
    assert error.param == param
    assert error.message.startswith(f"{param}: ")
    assert "instance of" not in error.message
    for internal in ("ChatMessageIn", "ContentPart", ".str", "literal[", "list["):
        assert internal not in error.message and internal not in str(error.param)
