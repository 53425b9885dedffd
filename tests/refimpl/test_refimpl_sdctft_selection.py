"""sDCTFT's location selection (SPEC.md §3, steps 1–4) against an independent reading of the rule: bands decided exactly in
integers, budgets n//B per band with the remainder in the last, the top ⌊δ·budget⌋ of each band by |DCT(W)|, shortfalls passed on.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from hypothesis import assume, given
from hypothesis import strategies as st
from refimpl_strategies import seeds

from peftref.refimpl import sdctft


def exact_bands(M: int, N: int, bands: int) -> np.ndarray:
    """Band b holds b·ρmax/B < ρ ≤ (b+1)·ρmax/B, i.e. B²ρ² > b²ρmax² for exactly b of the boundaries b = 1 … B−1."""
    u, v = np.meshgrid(np.arange(M), np.arange(N), indexing="ij")
    rho2, rho_max2 = u**2 + v**2, (M - 1) ** 2 + (N - 1) ** 2
    return sum((bands**2 * rho2 > b**2 * rho_max2).astype(int) for b in range(1, bands)) + np.zeros((M, N), dtype=int)


def budgets(n: int, bands: int) -> list[int]:
    return [n // bands] * (bands - 1) + [n - (bands - 1) * (n // bands)]


def energy(W: np.ndarray) -> np.ndarray:
    return np.abs(scipy.fft.dctn(W, type=2, norm="ortho"))


@given(st.integers(1, 24), st.integers(1, 24), st.integers(1, 5))
def test_bands_are_decided_exactly(M, N, bands):
    assert np.array_equal(sdctft.band_of((M, N), bands), exact_bands(M, N, bands))


@pytest.mark.parametrize("shape, bands", [((4, 4), 3), ((7, 7), 3), ((10, 16), 3), ((5, 21), 4), ((6, 11), 5)])
def test_positions_on_a_band_boundary_belong_to_the_inner_band(shape, bands):
    """Regression: the float formula ceil(ρ·B/ρmax) − 1 rounded ρ = b·ρmax/B up into band b (e.g. (1, 1) of a 4 × 4 matrix,
    exactly ρmax/3 from the DC corner, landed in band 1)."""
    assert np.array_equal(sdctft.band_of(shape, bands), exact_bands(*shape, bands))


@given(st.integers(8, 24), st.integers(8, 24), st.integers(1, 48), st.floats(0.0, 1.0), seeds, st.integers(1, 2**31))
def test_selection_takes_each_bands_budget_with_its_top_energies(M, N, n, fraction, seed, w_seed):
    W = np.random.default_rng(w_seed).standard_normal((M, N))
    cfg = sdctft.Config(n=n, seed=seed, energy_fraction=fraction)
    band = exact_bands(M, N, 3).ravel()
    sizes = np.bincount(band, minlength=3)
    assume(all(budget <= size for budget, size in zip(budgets(n, 3), sizes)))  # no shortfall: tested below
    indices = sdctft.select_locations(W, cfg)
    assert indices.shape == (2, n) and indices.dtype == np.int64
    assert np.array_equal(indices, sdctft.select_locations(W, cfg))  # deterministic for a seed
    flat = indices[0] * N + indices[1]
    assert np.all(np.diff(flat) > 0)  # sorted by row-major index, hence distinct
    assert np.all((indices[0] < M) & (indices[1] < N) & (indices >= 0).all(axis=0))
    assert list(np.bincount(band[flat], minlength=3)) == budgets(n, 3)
    E = energy(W).ravel()
    for b, budget in enumerate(budgets(n, 3)):
        members = np.flatnonzero(band == b)
        top = members[np.lexsort((members, -E[members]))][: int(np.floor(fraction * budget))]  # largest E, ties by index
        assert np.isin(top, flat).all()


@pytest.mark.parametrize(
    "shape, n, bands, counts",
    [
        ((3, 3), 6, 3, [1, 3, 2]),  # band 0 = {(0, 0)} gives 1 of 2: its shortfall of 1 makes band 1's budget 3 = all of it
        ((3, 3), 9, 3, [1, 3, 5]),  # n = M·N: every position
        ((1, 1), 1, 3, [1, 0, 0]),
        ((2, 2), 4, 3, [1, 0, 3]),  # band 1 is empty: ρ ∈ {0, 1, 1, √2}, ρmax/3 ≈ 0.47, 2ρmax/3 ≈ 0.94
        ((1, 2), 2, 4, [1, 0, 0, 1]),  # budgets 0, 0, 0, 2; band 3 has 1: the final shortfall takes the best unused, (0, 0)
    ],
)
def test_a_band_smaller_than_its_budget_passes_the_shortfall_on(shape, n, bands, counts):
    W = np.random.default_rng(0).standard_normal(shape)
    indices = sdctft.select_locations(W, sdctft.Config(n=n, bands=bands))
    flat = indices[0] * shape[1] + indices[1]
    assert np.unique(flat).size == n
    assert list(np.bincount(exact_bands(*shape, bands).ravel()[flat], minlength=bands)) == counts


@pytest.mark.parametrize("w_seed", range(4))
def test_final_shortfall_takes_the_largest_unused_energies(w_seed):
    """Budgets 0, 0, 2 on a 1 × 4 matrix whose band 2 holds one position: the one missing is the largest-E of the other three."""
    W = np.random.default_rng(w_seed).standard_normal((1, 4))
    band = exact_bands(1, 4, 3).ravel()
    assert list(np.bincount(band, minlength=3)) == [2, 1, 1]
    indices = sdctft.select_locations(W, sdctft.Config(n=2, bands=3))
    rest = np.flatnonzero(band != 2)
    best_rest = rest[np.argmax(energy(W).ravel()[rest])]
    assert sorted(indices[1].tolist()) == sorted([int(np.flatnonzero(band == 2)[0]), int(best_rest)])


def test_different_seeds_choose_different_random_positions():
    W = np.random.default_rng(4).standard_normal((16, 16))
    chosen = [sdctft.select_locations(W, sdctft.Config(n=48, seed=seed, energy_fraction=0.5)) for seed in (0, 1)]
    assert not np.array_equal(*chosen)


def test_energy_fraction_one_is_independent_of_the_seed():
    W = np.random.default_rng(5).standard_normal((16, 16))
    chosen = [sdctft.select_locations(W, sdctft.Config(n=48, seed=seed, energy_fraction=1.0)) for seed in (0, 1)]
    assert np.array_equal(*chosen)


def test_init_stores_the_selection_and_a_zero_spectrum():
    W = np.random.default_rng(6).standard_normal((12, 10))
    cfg = sdctft.Config(n=20, seed=3)
    params = sdctft.init(W, cfg, 0)
    assert np.array_equal(params["indices"], sdctft.select_locations(W, cfg))
    assert np.all(params["spectrum"] == 0.0)
