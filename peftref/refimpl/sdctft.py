r"""sDCTFT: selective discrete cosine transform fine-tuning (Shen et al., arXiv 2410.09103; later "MaCP", ACL 2025).

No trustworthy public code exists; this module is peftref's faithful reading of the paper, versioned as spec 1 (*decision*).

Learn n coefficients c ∈ R^n at DCT frequencies (u_k, v_k) chosen once from the frozen weight, and invert an orthonormal 2-D DCT-II:

    S[u_k, v_k] = c_k (zero elsewhere),  S ∈ R^{M × N},  M = d_out, N = d_in
    ΔW = α · idctn(S, type=2, norm="ortho") = α · Σ_k c_k φ_M(u_k) φ_N(v_k)ᵀ          (rank ≤ n)
    φ_M(u)[i] = a(u) cos(π (2i + 1) u / (2M)),  a(0) = √(1/M),  a(u > 0) = √(2/M)

Efficient forward (the orthonormal DCT is its own adjoint's inverse, so the same gather/scatter as FourierFT):

    x ΔWᵀ = α · idct(z),   z[u] = Σ_{k: u_k = u} c_k · dct(x)[v_k]
    gy ΔW = α · idct(z'),  z'[v] = Σ_{k: v_k = v} c_k · dct(gy)[u_k]
    ∂L/∂c_k = α · dctn(G)[u_k, v_k] = α · Σ_tokens dct(gy)[u_k] · dct(x)[v_k]

Selection, once at init, from the frozen W ("the most critical frequency components in each partition"):
  1. E = |dctn(W, type=2, norm="ortho")|.
  2. Radial distance from the DC corner ρ(u, v) = √(u² + v²), ρ_max = √((M−1)² + (N−1)²); ``bands`` equal-width rings:
     band b holds b·ρ_max/B < ρ ≤ (b+1)·ρ_max/B (band 0 also holds ρ = 0).
  3. Budgets n//B per band, the last band gets the remainder (B = 3: n//3, n//3, n − 2(n//3)). In each band take
     ⌊δ·budget⌋ positions of largest E (ties: smaller row-major index first), then the rest uniformly without replacement from
     the band's remaining positions with ``numpy.random.default_rng(seed)`` (one generator, bands in order). A band smaller
     than its budget gives all its positions and passes the shortfall to the next band; a shortfall left after the last
     band is filled with the largest-E unused positions.
  4. The indices are returned sorted by row-major flat index, and always stored: they depend on W's values.

Known deviations of the authors' description, recorded and not offered as options: an unnormalised DCT, and bands measured
from the matrix centre rather than from the DC corner.

Trainable: spectrum c (n,). Frozen: indices (2, n). Init: zeros (*decision*; ΔW = 0) or N(0, 1). Trainable parameters: n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from . import _common, _spectral

METHOD = "sdctft"
TRAINABLE = ("spectrum",)
FROZEN = ("indices",)


@dataclass(frozen=True)
class Config:
    """n coefficients, scale alpha, selection seed, energy_fraction δ chosen by energy per band, bands, init."""

    n: int = 1000
    alpha: float = 1.0
    seed: int = 0
    energy_fraction: float = 0.7
    bands: int = 3
    init: str = "zeros"

    def __post_init__(self):
        _common.check_int(METHOD, "n", self.n)
        _common.check_real(METHOD, "alpha", self.alpha)
        _common.check_int(METHOD, "seed", self.seed, low=0)
        _common.check_real(METHOD, "energy_fraction", self.energy_fraction)
        if not 0.0 <= self.energy_fraction <= 1.0:
            raise _common.fail(METHOD, f"config field 'energy_fraction' must be in [0, 1], got {self.energy_fraction}")
        _common.check_int(METHOD, "bands", self.bands)
        _common.check_choice(METHOD, "init", self.init, ("zeros", "normal"))


def _check_shape(shape, cfg: Config) -> tuple[int, int]:
    return _spectral.check_shape(METHOD, shape, cfg, Config)


def param_shapes(shape, cfg: Config) -> dict[str, tuple]:
    """spectrum (n,), indices (2, n)."""
    _check_shape(shape, cfg)
    return {"spectrum": (cfg.n,), "indices": (2, cfg.n)}


def num_trainable(shape, cfg: Config) -> int:
    """n."""
    _check_shape(shape, cfg)
    return cfg.n


def band_of(shape, bands: int) -> np.ndarray:
    """(d_out, d_in) int array: the band of each DCT position by its radial distance from the DC corner.

    Band b holds b·ρmax/B < ρ ≤ (b+1)·ρmax/B (ρ = 0 in band 0), decided exactly in integers because positions on a boundary
    are common (u = v = (M−1)/3 on a square matrix): ρ > b·ρmax/B  ⇔  B²(u² + v²) > b²((M−1)² + (N−1)²).
    """
    M, N = shape
    u, v = np.arange(M, dtype=np.int64)[:, None], np.arange(N, dtype=np.int64)[None, :]
    scaled_rho2 = bands**2 * (u**2 + v**2)  # (M, N): B² ρ²
    boundaries = np.arange(1, bands, dtype=np.int64) ** 2 * ((M - 1) ** 2 + (N - 1) ** 2)  # (B − 1,): b² ρmax², ascending
    return np.searchsorted(boundaries, scaled_rho2, side="left")  # (M, N): the number of boundaries ρ lies strictly beyond


def select_locations(W, cfg: Config) -> np.ndarray:
    """The (2, n) int64 DCT locations sDCTFT trains for the frozen weight W (steps 1–4 of the module docstring)."""
    W = _common.as_weight(METHOD, W)
    M, N = _check_shape(W.shape, cfg)
    energy = np.abs(scipy.fft.dctn(W, type=2, norm="ortho")).ravel()  # (M·N,)
    band = band_of((M, N), cfg.bands).ravel()  # (M·N,)
    rng = np.random.default_rng(cfg.seed)
    budgets = [cfg.n // cfg.bands] * (cfg.bands - 1) + [cfg.n - (cfg.bands - 1) * (cfg.n // cfg.bands)]
    chosen, shortfall = [], 0
    for b, budget in enumerate(budgets):
        members = np.flatnonzero(band == b)  # row-major order
        budget += shortfall
        if members.size <= budget:
            chosen.append(members)
            shortfall = budget - members.size
            continue
        shortfall = 0
        by_energy = members[np.argsort(-energy[members], kind="stable")]  # largest E first, ties by index
        top = int(np.floor(cfg.energy_fraction * budget))
        rest = np.sort(by_energy[top:])
        chosen += [by_energy[:top], rng.choice(rest, size=budget - top, replace=False)]
    flat = np.concatenate(chosen)
    if shortfall:
        unused = np.setdiff1d(np.arange(M * N), flat)
        flat = np.concatenate([flat, unused[np.argsort(-energy[unused], kind="stable")][:shortfall]])
    flat = np.sort(flat)
    return np.stack([flat // N, flat % N])  # (2, n)


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """spectrum = zeros (or N(0, 1)); indices selected from W by energy per band."""
    indices = select_locations(W, cfg)
    rng = _common.as_generator(rng)
    spectrum = np.zeros(cfg.n) if cfg.init == "zeros" else rng.standard_normal(cfg.n)
    return {"spectrum": spectrum, "indices": indices}


def _dct(a: np.ndarray) -> np.ndarray:
    return scipy.fft.dct(a, type=2, norm="ortho", axis=-1)


def _idct(a: np.ndarray) -> np.ndarray:
    return scipy.fft.idct(a, type=2, norm="ortho", axis=-1)


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    S = _spectral.sparse_spectrum(p, shape).toarray()  # (M, N)
    return cfg.alpha * scipy.fft.idctn(S, type=2, norm="ortho")  # (M, N)


_method = _spectral.additive_method(METHOD, Config, _dense_delta, _dct, _idct)


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW = α · idctn(S, type=2, norm="ortho"), (d_out, d_in) float64. W gives only the shape."""
    return _method.delta_weight(W, params, cfg)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW."""
    return _method.merge(W, params, cfg)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W' − ΔW."""
    return _method.unmerge(W_merged, params, cfg)


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x Wᵀ + b + α idct(z), z[u] = Σ_{u_k = u} c_k dct(x)[v_k]."""
    return _method.forward(x, W, params, cfg, bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"spectrum": ∂L/∂c})."""
    return _method.vjp(x, W, params, cfg, gy)
