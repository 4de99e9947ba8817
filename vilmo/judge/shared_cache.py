"""The seam for caches shared beyond one process: value instructions and prompt embeddings.

Both are pure functions of their key (the policy's content and the prompt; the text), costly to
compute on the request path and cheap to keep, so replicas of a gateway gain from sharing them.
The library only defines the seam; the gateway fills it with its store (SQLite or Redis, with
TTLs and bounds of its own). A cache may forget anything at any time and may fail: ``get`` then
answers None, ``put`` does nothing, and the caller computes the value itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


class SharedCache(Protocol):
    """Bytes by string key; keys may be long (the implementation hashes them)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


@runtime_checkable
class SharedCacheUser(Protocol):
    """What can keep its instructions and prompt embeddings in shared caches (None: back to
    its own in-process cache)."""

    def use_caches(self, instructions: SharedCache | None,
                   embeddings: SharedCache | None) -> None: ...


def dump_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def load_vector(data: bytes, dimensions: int) -> np.ndarray | None:
    """The cached embedding; None when it is not ``dimensions`` float32 values (a miss)."""
    if len(data) != 4 * dimensions:
        return None
    return np.frombuffer(data, dtype="<f4").astype(np.float32)
