"""The one logistic function of the library (serving, training and evaluation share it)."""

from __future__ import annotations

from typing import Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

Float = TypeVar("Float", bound=np.floating[Any])


@overload
def sigmoid(x: float) -> np.float64: ...
@overload
def sigmoid(x: npt.NDArray[Float]) -> npt.NDArray[Float]: ...
@overload
def sigmoid(x: npt.ArrayLike) -> npt.NDArray[np.float64]: ...
def sigmoid(x: Any) -> Any:
    """1 / (1 + e^-x) elementwise, in x's float type (float32 stays float32, anything else is
    float64); clipped to [-40, 40] first so that exp never overflows (``maximum`` then
    ``minimum``: ``np.clip``'s values, without its dispatch, which cost more than the rest for
    the instruction step's few values)."""
    array = np.asarray(x)
    if array.dtype.kind != "f":
        array = array.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-np.minimum(np.maximum(array, -40), 40)))
