"""``delta_factors``: the thin factors ΔW = L R of the methods that have them (LoRA, SVD re-scaling), against ``delta_weight``.

Tolerance (float64): an entry of L R and the same entry of the reference's ΔW are both sums of k ≤ 24 products, grouped
differently for LoRA ((s·B) A against s·(B A)); each is within k·eps·(|L| |R|)_ij of the exact value (k·eps ≤ 5.4e-15), so
they agree to 1e-12 · (|L| |R|)_ij with a wide margin, while a wrong factor, scale or transpose is of the order of (|L| |R|)_ij.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from refimpl_strategies import cases

from peftref import refimpl

FACTORED = ("lora", "svd_rescale")


def test_the_factored_methods_are_the_ones_with_delta_factors():
    assert tuple(m for m in refimpl.METHODS if hasattr(refimpl.get(m), "delta_factors")) == FACTORED


@pytest.mark.parametrize("method", FACTORED)
@given(data=st.data())
def test_factors_multiply_to_the_delta_weight(method, data):
    case = data.draw(cases(method))
    (d_out, d_in), k = case.shape, case.cfg.r
    L, R = case.module.delta_factors(case.W, case.params, case.cfg)
    assert L.shape == (d_out, k) and R.shape == (k, d_in) and L.dtype == R.dtype == np.float64
    error = np.abs(L @ R - case.module.delta_weight(case.W, case.params, case.cfg))  # (d_out, d_in)
    assert np.all(error <= 1e-12 * (np.abs(L) @ np.abs(R)))


@pytest.mark.parametrize("method", FACTORED)
@given(data=st.data())
def test_factors_of_the_init_multiply_to_exactly_zero(method, data):
    """LoRA: B = 0 so L = 0; SVD re-scaling: b = 1, s = σ⁰ so L = U σ⁰ − U σ⁰ = 0 exactly (as delta_weight)."""
    case = data.draw(cases(method, train=False))
    L, R = case.module.delta_factors(case.W, case.params, case.cfg)
    assert np.all(L @ R == 0.0)


@pytest.mark.parametrize("method", FACTORED)
def test_factors_validate_their_input_like_delta_weight(method):
    m = refimpl.get(method)
    W = np.random.default_rng(0).standard_normal((6, 5))
    cfg = m.Config(r=2)
    params = m.init(W, cfg, 0)
    first = sorted(params)[0]
    bad = dict(params, **{first: np.zeros((3, 3, 3))})
    with pytest.raises(ValueError, match=rf"^{method}: parameter '{first}' must have shape"):
        m.delta_factors(W, bad, cfg)
    with pytest.raises(TypeError, match=rf"^{method}: cfg must be a {method}.Config"):
        m.delta_factors(W, params, {"r": 2})
