"""A fixture shared by the Router-path bound tests: how long each text LiteLLM redacts is."""

from __future__ import annotations

import pytest
from litellm.litellm_core_utils import secret_redaction


@pytest.fixture(name="redacted_lengths")
def redacted_lengths_fixture(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of each text LiteLLM's Python redaction reads (the native one is off)."""
    lengths: list[int] = []
    redact = secret_redaction.python_redact_string

    def counting(value: str) -> str:
        lengths.append(len(value))
        return redact(value)

    monkeypatch.setattr(secret_redaction, "python_redact_string", counting)
    return lengths
