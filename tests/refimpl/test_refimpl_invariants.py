"""The invariants every method must satisfy (SPEC.md, "Invariants every method must satisfy"), each drawn by Hypothesis for
every method from the shared strategies.

Tolerances (float64): the efficient forward and the merged product sum the same d ≤ 24-term products in another order, so they
agree to a few ulps of the largest intermediate; 1e-10 relative to max(1, |expected|) leaves a wide margin over that rounding
while any real defect (a wrong index, a missing transpose, a wrong scale) is O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from refimpl_strategies import PAPER_COUNT, ZERO_INIT, assert_close, batch_shapes, cases

from peftref import refimpl
from peftref.refimpl import bone, dcft, fourierft

METHODS = pytest.mark.parametrize("method", refimpl.METHODS)


@METHODS
@given(data=st.data())
def test_forward_equals_merged_forward(method, data):
    case = data.draw(cases(method))
    m, (d_out, d_in) = case.module, case.shape
    x = case.tokens(data.draw(batch_shapes), d_in)
    bias = case.rng.standard_normal(d_out)
    y = m.forward(x, case.W, case.params, case.cfg, bias=bias)
    assert y.shape == x.shape[:-1] + (d_out,) and y.dtype == np.float64
    assert_close(y, x @ m.merge(case.W, case.params, case.cfg).T + bias, rel=1e-10)
    assert_close(m.forward(x, case.W, case.params, case.cfg), x @ m.merge(case.W, case.params, case.cfg).T, rel=1e-10)


@METHODS
@given(data=st.data())
def test_merge_is_w_plus_delta_and_unmerge_inverts_it(method, data):
    case = data.draw(cases(method))
    m = case.module
    merged = m.merge(case.W, case.params, case.cfg)
    assert_close(merged, case.W + m.delta_weight(case.W, case.params, case.cfg), rel=1e-12)
    assert_close(m.unmerge(merged, case.params, case.cfg), case.W, rel=1e-10)  # Bat: I + B_i has condition ≤ 3 here


@pytest.mark.parametrize("method", ZERO_INIT)
@given(data=st.data())
def test_zero_init_delta_is_exactly_zero(method, data):
    case = data.draw(cases(method, train=False, zero_init=True))
    m = case.module
    assert np.all(m.delta_weight(case.W, case.params, case.cfg) == 0.0)
    assert np.array_equal(m.merge(case.W, case.params, case.cfg), case.W)


def test_dcft_init_is_small_but_not_zero():
    """DCFT is the one method without a zero init (the original draws A, B, C from N(0, 0.02²))."""
    W = np.zeros((16, 16))
    cfg = dcft.Config(d=4)
    delta = dcft.delta_weight(W, dcft.init(W, cfg, 0), cfg)
    assert 0 < np.abs(delta).max() < 1e-3


@METHODS
@given(data=st.data())
def test_vjp_matches_central_differences(method, data):
    """Directional derivatives ⟨∂L/∂p, e⟩ against (L(p + h e) − L(p − h e)) / 2h for L = ⟨gy, forward(x)⟩, for x and every
    trainable array, along two random directions each.

    Every method's output is affine in x and in each single trainable array (the others fixed), so the central difference has
    no truncation error: only rounding, about eps·Σ|gy·y| / h ≈ 1e-13 relative at h = 1e-3. Tolerance 1e-8 relative to Σ|gy·y|.
    """
    case = data.draw(cases(method))
    m, (d_out, d_in) = case.module, case.shape
    batch = data.draw(batch_shapes)
    x, gy = case.tokens(batch, d_in), case.tokens(batch, d_out)
    gx, grads = m.vjp(x, case.W, case.params, case.cfg, gy)
    assert gx.shape == x.shape and set(grads) == set(m.TRAINABLE)

    def loss(x_, params) -> tuple[float, float]:
        terms = gy * m.forward(x_, case.W, params, case.cfg)
        return float(terms.sum()), float(np.abs(terms).sum())

    h = 1e-3
    perturbations = [("x", x, gx, lambda t, e: loss(x + t * e, case.params))]
    for name in m.TRAINABLE:
        assert grads[name].shape == case.params[name].shape
        value = case.params[name]
        perturbations.append((name, value, grads[name], lambda t, e, name=name, value=value: loss(x, {**case.params, name: value + t * e})))
    for name, value, grad, perturbed in perturbations:
        for _ in range(2):
            e = case.rng.standard_normal(value.shape)
            (plus, size_plus), (minus, size_minus) = perturbed(h, e), perturbed(-h, e)
            central = (plus - minus) / (2 * h)
            analytic = float(np.sum(grad * e))
            assert abs(central - analytic) <= 1e-8 * max(1.0, size_plus + size_minus), (name, central, analytic)


@METHODS
@given(data=st.data())
def test_num_trainable_counts_the_arrays_and_matches_the_paper(method, data):
    case = data.draw(cases(method, train=False))
    m, (d_out, d_in) = case.module, case.shape
    shapes = m.param_shapes(case.shape, case.cfg)
    assert set(shapes) == set(m.TRAINABLE) | set(m.FROZEN) == set(case.params)
    for name, array in case.params.items():
        assert array.shape == shapes[name]
        assert array.dtype == (np.int64 if name == "indices" else np.float64)
    count = m.num_trainable(case.shape, case.cfg)
    assert count == sum(case.params[name].size for name in m.TRAINABLE)
    assert count == PAPER_COUNT[method](case.cfg, d_out, d_in)


@METHODS
@given(data=st.data())
def test_leading_batch_dimensions_act_per_token(method, data):
    """forward and vjp on x (b1, b2, d_in) equal the same calls on the flattened (b1·b2, d_in) tokens."""
    case = data.draw(cases(method))
    m, (d_out, d_in) = case.module, case.shape
    batch = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    x, gy = case.tokens(batch, d_in), case.tokens(batch, d_out)
    flat_x, flat_gy = x.reshape(-1, d_in), gy.reshape(-1, d_out)
    y = m.forward(x, case.W, case.params, case.cfg)
    assert_close(y, m.forward(flat_x, case.W, case.params, case.cfg).reshape(batch + (d_out,)), rel=1e-12)
    gx, grads = m.vjp(x, case.W, case.params, case.cfg, gy)
    flat_gx, flat_grads = m.vjp(flat_x, case.W, case.params, case.cfg, flat_gy)
    assert_close(gx, flat_gx.reshape(x.shape), rel=1e-12)
    for name in m.TRAINABLE:
        assert_close(grads[name], flat_grads[name], rel=1e-12)
    single = m.forward(x.reshape(-1, d_in)[0], case.W, case.params, case.cfg)  # a single token, shape (d_in,)
    assert_close(single, y.reshape(-1, d_out)[0], rel=1e-12)


@pytest.mark.parametrize("method", ["fourierft", "sdctft"])
@given(data=st.data())
def test_transposing_the_spectrum_transposes_delta(method, data):
    """Re ifft2(Fᵀ) = (Re ifft2 F)ᵀ and idctn(Sᵀ) = idctn(S)ᵀ: the (N, M) layer with locations (v, u) has ΔWᵀ."""
    case = data.draw(cases(method))
    m = case.module
    delta = m.delta_weight(case.W, case.params, case.cfg)
    transposed = {"spectrum": case.params["spectrum"], "indices": case.params["indices"][::-1]}
    assert_close(m.delta_weight(case.W.T, transposed, case.cfg), delta.T, rel=1e-12)


def _deberta_v3_base_dcft(d: int) -> int:
    """12 layers × (q, k, v, o 768×768 + FFN 3072×768 + 768×3072)."""
    shapes = [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
    return 12 * sum(dcft.num_trainable(shape, dcft.Config(d=d)) for shape in shapes)


def _llama2_7b(method: str, cfg, modules: str) -> int:
    """32 layers; q, k, v, o are 4096×4096, gate and up 11008×4096, down 4096×11008."""
    shapes = {
        "q": (4096, 4096),
        "k": (4096, 4096),
        "v": (4096, 4096),
        "o": (4096, 4096),
        "gate": (11008, 4096),
        "up": (11008, 4096),
        "down": (4096, 11008),
    }
    return 32 * sum(refimpl.get(method).num_trainable(shapes[name], cfg) for name in modules.split(","))


def _roberta_base_fourierft(n: int) -> int:
    """12 layers × q, v (768×768)."""
    return 12 * 2 * fourierft.num_trainable((768, 768), fourierft.Config(n=n))


@pytest.mark.parametrize(
    "count, paper",
    [
        (lambda: _deberta_v3_base_dcft(8), 25_344),  # DCFT paper, GLUE, d = 8: "0.024M"
        (lambda: _deberta_v3_base_dcft(2), 83_232),
        (lambda: _llama2_7b("fourierft", fourierft.Config(n=1000), "q,v"), 64_000),  # FourierFT paper: "0.064M"
        (lambda: _roberta_base_fourierft(1000), 24_000),  # FourierFT paper, RoBERTa-base GLUE: "0.024M"
        (lambda: _llama2_7b("bone", bone.Config(r=64), "q,k,v,o,gate,up,down"), 87_031_808),  # Bone paper: "87.0M"
    ],
    ids=["dcft-deberta-d8", "dcft-deberta-d2", "fourierft-llama2", "fourierft-roberta", "bone-llama2"],
)
def test_num_trainable_reproduces_the_papers_totals(count, paper):
    assert count() == paper
