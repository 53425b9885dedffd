"""Each method's ΔW against an independent closed form or peer, on small sizes, and the method-specific properties of SPEC.md.

Tolerances (float64): the closed forms below sum at most n ≤ 48 terms of size ≤ |α c_k| in another order than the FFT/DCT/kron
paths, so they agree to ~1e-15 relative; 1e-12 relative to max(1, |expected|) is a wide margin, and a real defect is O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given
from hypothesis import strategies as st
from refimpl_strategies import assert_close, cases, dims, scales, seeds

from peftref.refimpl import bat, dcft, fourierft, lora, sdctft, svd_rescale


@st.composite
def sparse_spectra(draw, max_dim: int = 12):
    """(shape, cfg, params) for FourierFT with arbitrary distinct locations (not only PEFT's), n ≤ 48."""
    M, N = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    rng = np.random.default_rng(draw(seeds))
    n = draw(st.integers(1, min(M * N, 48)))
    flat = rng.choice(M * N, size=n, replace=False)
    params = {"spectrum": rng.standard_normal(n), "indices": np.stack([flat // N, flat % N])}
    return (M, N), draw(scales), params


def dense_spectrum(shape, params) -> np.ndarray:
    F = np.zeros(shape)
    F[params["indices"][0], params["indices"][1]] = params["spectrum"]
    return F


# ---------------------------------------------------------------- FourierFT


@given(sparse_spectra())
def test_fourierft_delta_is_the_cosine_sum(spectrum):
    """ΔW[p, q] = α/(MN) Σ_k c_k cos(2π (p u_k / M + q v_k / N))."""
    (M, N), alpha, params = spectrum
    u, v = params["indices"]
    p, q = np.arange(M)[:, None, None], np.arange(N)[None, :, None]
    cosines = np.cos(2 * np.pi * (p * u / M + q * v / N))  # (M, N, n)
    expected = alpha / (M * N) * cosines @ params["spectrum"]
    cfg = fourierft.Config(n=u.size, alpha=alpha)
    assert_close(fourierft.delta_weight(np.zeros((M, N)), params, cfg), expected, rel=1e-12)


@given(sparse_spectra(max_dim=24))
def test_fourierft_fast_delta_equals_plain_ifft2(spectrum):
    (M, N), alpha, params = spectrum
    expected = alpha * np.real(scipy.fft.ifft2(dense_spectrum((M, N), params)))
    cfg = fourierft.Config(n=params["spectrum"].size, alpha=alpha)
    assert_close(fourierft.delta_weight(np.zeros((M, N)), params, cfg), expected, rel=1e-12)


@pytest.mark.parametrize(
    "shape, locations",
    [
        ((1, 9), [(0, 0), (0, 4), (0, 5), (0, 8)]),  # 1 × N, odd N: v and N − v both present
        ((1, 8), [(0, 0), (0, 4), (0, 3), (0, 5)]),  # 1 × N, even N: v = N/2 is its own mirror
        ((7, 1), [(0, 0), (3, 0), (6, 0)]),  # M × 1: every location has v = 0
        ((6, 8), [(0, 0), (1, 0), (5, 0), (2, 4), (3, 4), (1, 2), (4, 2), (1, 6), (0, 7)]),  # duplicate columns, v = 0 and N/2
        ((5, 7), [(u, v) for u in range(5) for v in range(7)]),  # n = M·N: every column, every mirror pair
        ((8, 6), [(0, 3), (4, 3), (4, 0), (7, 5), (1, 1)]),
    ],
    ids=["1xN-odd", "1xN-even", "Mx1", "duplicate-columns", "full", "even-even"],
)
def test_fourierft_fast_delta_edge_cases(shape, locations):
    rng = np.random.default_rng(len(locations))
    params = {"spectrum": rng.standard_normal(len(locations)), "indices": np.array(locations).T}
    cfg = fourierft.Config(n=len(locations), alpha=-3.5)
    expected = -3.5 * np.real(scipy.fft.ifft2(dense_spectrum(shape, params)))
    assert_close(fourierft.delta_weight(np.zeros(shape), params, cfg), expected, rel=1e-12)


def test_fourierft_fast_delta_on_a_large_layer():
    """n = 1000 PEFT locations on a 1024 × 768 layer (many shared columns and mirror pairs; the half spectrum is inverted in
    several row blocks, the last one partial), 1e-12 relative to max |ΔW|."""
    cfg = fourierft.Config(n=1000, alpha=150.0, seed=777)
    W = np.zeros((1024, 768))
    params = fourierft.init(W, cfg, 0)
    expected = 150.0 * np.real(scipy.fft.ifft2(dense_spectrum(W.shape, params)))
    delta = fourierft.delta_weight(W, params, cfg)
    assert_close(delta, expected, rel=1e-12, scale=float(np.abs(expected).max()))


# ---------------------------------------------------------------- sDCTFT


def dct_basis(size: int, u: np.ndarray) -> np.ndarray:
    """φ_size(u)[i] = a(u) cos(π (2i + 1) u / (2 size)), a(0) = √(1/size), a(u > 0) = √(2/size): (size, len(u))."""
    i = np.arange(size)[:, None]
    a = np.where(u == 0, np.sqrt(1 / size), np.sqrt(2 / size))
    return a * np.cos(np.pi * (2 * i + 1) * u / (2 * size))


@given(sparse_spectra())
def test_sdctft_delta_is_the_basis_vector_sum(spectrum):
    """ΔW = α Σ_k c_k φ_M(u_k) φ_N(v_k)ᵀ."""
    (M, N), alpha, params = spectrum
    u, v = params["indices"]
    expected = alpha * (dct_basis(M, u) * params["spectrum"]) @ dct_basis(N, v).T  # (M, n) @ (n, N)
    cfg = sdctft.Config(n=u.size, alpha=alpha)
    assert_close(sdctft.delta_weight(np.zeros((M, N)), params, cfg), expected, rel=1e-12)


# ---------------------------------------------------------------- DCFT


def original_dcft_update(P: np.ndarray, C: np.ndarray, stride: int, scaling: float) -> np.ndarray:
    """The original code's update, in its x·Δ layout (d_in × d_out), transposed into ours: torch's conv_transpose2d of (BA)ᵀ
    with kernel C."""
    x_delta = torch.nn.functional.conv_transpose2d(torch.from_numpy(P.T)[None, None], torch.from_numpy(C)[None, None], stride=stride)
    return scaling * x_delta[0, 0].numpy().T


@given(case=cases("dcft"))
def test_dcft_delta_equals_torch_conv_transpose2d_as_the_original_applies_it(case):
    """stride < d (overlapping), = d (tiles) and > d (gaps), all against torch in float64."""
    p, cfg = case.params, case.cfg
    expected = original_dcft_update(p["B"] @ p["A"], p["C"], cfg.stride, cfg.scaling)
    assert_close(dcft.delta_weight(case.W, p, cfg), expected, rel=1e-12)


@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), seeds)
def test_dcft_general_conv_transpose_equals_kron_when_stride_is_d(d, n_out, n_in, seed):
    rng = np.random.default_rng(seed)
    P, K = rng.standard_normal((n_out, n_in)), rng.standard_normal((d, d))
    assert_close(dcft.conv_transpose(P, K, stride=d), np.kron(P, K), rel=1e-15)


def test_dcft_kron_with_the_untransposed_kernel_is_wrong():
    """kron(BA, C) is what a layout-naive port computes; for a non-symmetric C it differs from the original's update."""
    rng = np.random.default_rng(0)
    cfg = dcft.Config(d=3, k=2, scaling=0.5)
    W = np.zeros((9, 12))
    params = {"A": rng.standard_normal((2, 4)), "B": rng.standard_normal((3, 2)), "C": rng.standard_normal((3, 3))}
    P = params["B"] @ params["A"]
    delta = dcft.delta_weight(W, params, cfg)
    assert_close(delta, original_dcft_update(P, params["C"], 3, 0.5), rel=1e-12)
    assert_close(delta, 0.5 * np.kron(P, params["C"].T), rel=1e-12)
    assert np.abs(delta - 0.5 * np.kron(P, params["C"])).max() > 0.1


def test_dcft_original_scaling():
    assert dcft.original_scaling(16.0, 8) == 16.0 / (8 + 1e-5)


# ---------------------------------------------------------------- Bat


@pytest.mark.parametrize("block", [0, 2])
def test_bat_unmerge_refuses_a_singular_block_and_names_it(block):
    cfg = bat.Config(r=2)
    W = np.random.default_rng(0).standard_normal((6, 4))
    B = np.zeros((3, 2, 2))
    B[block] = [[-1.0, 0.0], [0.0, 0.3]]  # I + B_i = diag(0, 1.3): singular
    with pytest.raises(
        ValueError, match=rf"bat: cannot unmerge: I \+ B\[{block}\] \(output rows {2 * block}\.\.{2 * block + 1}\) is singular"
    ):
        bat.unmerge(W, {"B": B}, cfg)


def test_bat_unmerge_refuses_an_ill_conditioned_block():
    B = np.zeros((2, 2, 2))
    B[1] = [[-1.0 + 1e-12, 0.0], [0.0, 0.0]]  # I + B_1 = diag(1e-12, 1): condition number 1e12 > bat.MAX_CONDITION
    with pytest.raises(ValueError, match=r"I \+ B\[1\] .* ill-conditioned \(condition number 1e\+12"):
        bat.unmerge(np.eye(4), {"B": B}, bat.Config(r=2))
    B[1, 0, 0] = -1.0 + 1e-6  # condition 1e6: accepted, and still inverts merge
    W = np.random.default_rng(1).standard_normal((4, 4))
    assert_close(bat.unmerge(bat.merge(W, {"B": B}, bat.Config(r=2)), {"B": B}, bat.Config(r=2)), W, rel=1e-8)


def test_bat_delta_is_the_block_formula():
    """ΔW_ij = W_ij B_i + B_i, block by block, written out with explicit loops."""
    rng = np.random.default_rng(2)
    r, W, B = 3, rng.standard_normal((6, 9)), rng.standard_normal((2, 3, 3))
    expected = np.zeros_like(W)
    for i in range(2):
        for j in range(3):
            expected[i * r : (i + 1) * r, j * r : (j + 1) * r] = W[i * r : (i + 1) * r, j * r : (j + 1) * r] @ B[i] + B[i]
    assert_close(bat.delta_weight(W, {"B": B}, bat.Config(r=r)), expected, rel=1e-14)


@given(first=cases("bat"), second_seed=seeds)
def test_two_bat_adapters_compose_in_sequence(first, second_seed):
    """The second adapter sees the weight merged by the first; unmerging in reverse order restores W; not additive."""
    cfg, W, p1 = first.cfg, first.W, first.params
    p2 = {"B": np.random.default_rng(second_seed).uniform(-0.5, 0.5, size=p1["B"].shape) / cfg.r}
    W1 = bat.merge(W, p1, cfg)
    W12 = bat.merge(W1, p2, cfg)
    x = first.rng.standard_normal((3, W.shape[1]))
    assert_close(bat.forward(x, W1, p2, cfg), x @ W12.T, rel=1e-10)
    assert_close(bat.unmerge(bat.unmerge(W12, p2, cfg), p1, cfg), W, rel=1e-10)
    delta1 = bat.delta_weight(W, p1, cfg)
    cross = W12 - (W + delta1 + bat.delta_weight(W, p2, cfg))  # what adding the two ΔW(W) would miss: ΔW1_ij B2_i
    zero = np.zeros_like(W)
    assert_close(cross, bat.delta_weight(delta1, p2, cfg) - bat.delta_weight(zero, p2, cfg), rel=1e-12)
    assert np.abs(cross).max() > 0


# ---------------------------------------------------------------- SVD re-scaling


@given(case=cases("svd_rescale", train=False))
def test_svd_rescale_is_exactly_zero_at_init(case):
    """Computed in the factored order (diag(b) U diag(s) − U diag(σ⁰)) Vᵀ, the init gives exactly 0, not merely ≈ 0."""
    assert np.all(svd_rescale.delta_weight(case.W, case.params, case.cfg) == 0.0)
    assert np.array_equal(svd_rescale.merge(case.W, case.params, case.cfg), case.W)
    x = case.rng.standard_normal((2, case.shape[1]))
    assert np.array_equal(svd_rescale.forward(x, case.W, case.params, case.cfg), x @ case.W.T)


@given(case=cases("svd_rescale"), data=st.data())
def test_svd_rescale_is_invariant_to_flipping_a_singular_pair(case, data):
    i = data.draw(st.integers(0, case.cfg.r - 1))
    flipped = dict(case.params)
    for name in ("U", "V"):
        flipped[name] = case.params[name].copy()
        flipped[name][:, i] *= -1
    delta = svd_rescale.delta_weight(case.W, case.params, case.cfg)
    assert_close(svd_rescale.delta_weight(case.W, flipped, case.cfg), delta, rel=1e-12)
    x = case.rng.standard_normal((2, case.shape[1]))
    assert_close(svd_rescale.forward(x, case.W, flipped, case.cfg), svd_rescale.forward(x, case.W, case.params, case.cfg), rel=1e-12)


@given(d_out=dims, d_in=dims, seed=seeds)
def test_svd_rescale_full_rank_merge_is_the_rescaled_svd(d_out, d_in, seed):
    """With r = min(d_out, d_in): W + ΔW = diag(b) U diag(s) Vᵀ."""
    rng = np.random.default_rng(seed)
    W, cfg = rng.standard_normal((d_out, d_in)), svd_rescale.Config(r=min(d_out, d_in))
    params = svd_rescale.init(W, cfg, rng)
    params["s"], params["b"] = rng.standard_normal(cfg.r), rng.standard_normal(d_out)
    expected = params["b"][:, None] * (params["U"] * params["s"]) @ params["V"].T
    assert_close(svd_rescale.merge(W, params, cfg), expected, rel=1e-12)


# ---------------------------------------------------------------- LoRA


def test_lora_scaling_plain_and_rslora():
    assert lora.Config(r=16, alpha=32.0).scaling == 2.0
    assert lora.Config(r=16, alpha=32.0, use_rslora=True).scaling == 8.0
