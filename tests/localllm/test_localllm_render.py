"""Rendering chat messages for a base model, and stop-string handling (no model needed)."""

from __future__ import annotations

import pytest

from localllm.render import STOP, RenderError, cut_at_stop, held_back, render


def test_system_first_then_turns_then_assistant_prefix() -> None:
    prompt = render([
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Be kind."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Tell a story."},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
    ])
    assert prompt == ("Be kind.\n\nUser: Hi\nAssistant: Hello.\nUser: Tell a story.\n"
                      "Assistant:")


def test_without_system_message() -> None:
    assert render([{"role": "user", "content": "Story: Mike pushed John and"}]) == \
        "User: Story: Mike pushed John and\nAssistant:"


@pytest.mark.parametrize("messages", [[], [{"content": "x"}], [{"role": "wizard", "content": "x"}],
                                      [{"role": "user", "content": 3}]])
def test_bad_messages(messages: list[dict[str, object]]) -> None:
    with pytest.raises(RenderError):
        render(messages)


def test_stops() -> None:
    assert cut_at_stop("He helped.\nUser: and then", STOP) == ("He helped.", True)
    assert cut_at_stop("He helped.", STOP) == ("He helped.", False)
    assert cut_at_stop("a END b", ["END", "b"]) == ("a ", True)
    assert held_back("He helped.\nUs", STOP) == 3
    assert held_back("He helped.", STOP) == 0
    assert held_back("x\n", STOP) == 1
