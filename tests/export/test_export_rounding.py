"""Rounding a merged weight once, float64 -> storage dtype, to nearest with ties to even — checked in exact arithmetic.

bfloat16 is the case that needs care: ml_dtypes converts float64 through float32, which rounds twice.
"""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peftref.export.tensors import round_to_dtype

BF16 = np.dtype(ml_dtypes.bfloat16)


def _correctly_rounded(x: float, dtype: np.dtype) -> float:
    """The nearest `dtype` value to x, ties to an even last bit, found among x's two neighbours in exact rationals."""
    info = ml_dtypes.finfo(dtype)
    if abs(x) > float(info.max) * (1 + float(info.eps) / 4):
        return float("inf") * np.sign(x)
    below = np.array(x, np.float64).astype(np.float32).astype(dtype)  # within a few ulps of x
    candidates = {float(below)}
    for _ in range(4):
        candidates |= {float(np.nextafter(np.array(c, dtype), np.array(s, dtype))) for c in list(candidates) for s in (-np.inf, np.inf)}
    exact = Fraction(x)
    best = min(candidates, key=lambda c: (abs(Fraction(c) - exact), int(np.array(c, dtype).view(np.uint16)) & 1))
    return best


@given(arrays(np.float64, 64, elements=st.floats(-1e4, 1e4, allow_nan=False, width=64)))
def test_bfloat16_is_correctly_rounded(x):
    rounded = round_to_dtype(x, BF16)
    assert rounded.dtype == BF16
    for value, got in zip(x, rounded.astype(np.float64)):
        assert got == _correctly_rounded(float(value), BF16), value


@given(arrays(np.float64, 64, elements=st.floats(-6e4, 6e4, allow_nan=False, width=64)))
def test_float16_is_correctly_rounded(x):
    rounded = round_to_dtype(x, np.dtype(np.float16))
    for value, got in zip(x, rounded.astype(np.float64)):
        assert got == _correctly_rounded(float(value), np.dtype(np.float16)), value


def test_bfloat16_rounds_once_where_ml_dtypes_rounds_twice():
    """1 + 2⁻⁸ + 2⁻³⁰ lies just above the midpoint of 1 and 1 + 2⁻⁷: the nearest bfloat16 is 1 + 2⁻⁷. Through float32,
    2⁻³⁰ is lost first, leaving the exact midpoint, which ties to even: 1."""
    x = np.array([1 + 2**-8 + 2**-30, -(1 + 2**-8 + 2**-30), 1 + 2**-8, 1 + 3 * 2**-8])
    assert np.array_equal(x.astype(BF16).astype(np.float64), [1.0, -1.0, 1.0, 1 + 2**-6])  # the double rounding
    assert np.array_equal(round_to_dtype(x, BF16).astype(np.float64), [1 + 2**-7, -(1 + 2**-7), 1.0, 1 + 2**-6])
