"""The library's one exception base and its one logistic function."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vilmo import PolicyError, UnknownPolicy, VilmoError
from vilmo.datasets.readers import DataMissing
from vilmo.judge.classifier import ClassifierError, UnknownValue
from vilmo.numeric import sigmoid
from vilmo.yamlfile import FileError


def test_one_except_catches_every_library_error_and_builtin_bases_still_hold() -> None:
    for error, builtin in ((UnknownPolicy("p"), KeyError), (UnknownValue("v"), KeyError),
                           (FileError([]), ValueError), (PolicyError([]), ValueError),
                           (ClassifierError("x"), RuntimeError),
                           (DataMissing("d"), FileNotFoundError)):
        with pytest.raises(VilmoError):
            raise error
        assert isinstance(error, builtin)
    assert str(UnknownPolicy("p")) == "'p'"  # KeyError's quoting is kept


def test_sigmoid_keeps_float32_and_never_overflows() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sigmoid(np.array([-1e6, 0.0, 1e6], dtype=np.float32))
    assert out.dtype == np.float32 and out.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert sigmoid([0, 2]).dtype == np.float64
    assert float(sigmoid(np.log(3.0))) == pytest.approx(0.75)
