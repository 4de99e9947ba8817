"""Type aliases shared across modules, so no bare ``dict`` crosses a module boundary."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Matrix: TypeAlias = npt.NDArray[np.float32]
"""Rows of float32 vectors (embeddings, scores)."""

ChatMessage: TypeAlias = dict[str, Any]
"""One OpenAI chat message as it arrives on the wire (role, content, and anything else)."""

Messages: TypeAlias = list[ChatMessage]
