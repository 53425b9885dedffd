r"""FourierFT: parameter-efficient fine-tuning with the discrete Fourier transform
(Gao et al., ICML 2024, arXiv 2405.03003; PEFT ``FOURIERFT``).

Learn n spectral coefficients c ∈ R^n at fixed random frequencies (u_k, v_k) and take the real part of the inverse 2-D DFT:

    F[u_k, v_k] = c_k (zero elsewhere),  F ∈ C^{M × N},  M = d_out, N = d_in
    ΔW = α · Re(ifft2(F))       (numpy's "backward" norm: ifft2 divides by M N)
    ΔW[p, q] = α/(MN) · Σ_k c_k cos(2π (p u_k / M + q v_k / N))

The paper's equation omits 1/(MN); every implementation (the authors', PEFT's) has it, and so does this one.
α is PEFT's ``scaling`` (default 150); locations come from PEFT's ``random_loc_seed`` (default 777), the same for every
layer of one shape (see :func:`peft_locations`).

Efficient forward, per token, never forming ΔW — O(M log M + N log N + n) instead of O(MN):

    x ΔWᵀ = α · Re(ifft(z)),   z[u] = Σ_{k: u_k = u} c_k · ifft(x)[v_k]
    gy ΔW = α · Re(ifft(z')),  z'[v] = Σ_{k: v_k = v} c_k · ifft(gy)[u_k]        (the adjoint)
    ∂L/∂c_k = α/(MN) · Re(Σ_tokens fft(gy)[u_k] · fft(x)[v_k]) = α · Re(Σ_tokens ifft(gy)[u_k] · ifft(x)[v_k])

Fast ΔW (the exporter's hot path). Re(ifft2(F)) only needs half the spectrum: fold each coefficient onto the input
frequencies 0 … N//2 (c at (u, v) acts as c at (−u, −v), cos being even), transform the ≤ n non-zero columns along the
output axis, then one real inverse FFT (``irfft``) along the input axis: about a quarter of a dense complex ``ifft2``.

Trainable: spectrum c (n,). Frozen: indices (2, n) int64, rows u then columns v, all distinct.
Init: c ~ N(0, 1) (PEFT's default; ΔW ≠ 0 at init) or zeros. Trainable parameters: n.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.fft

from . import _common, _randperm, _spectral

METHOD = "fourierft"
TRAINABLE = ("spectrum",)
FROZEN = ("indices",)
_WORKERS = min(4, os.cpu_count() or 1)
_BLOCK_BYTES = 2**21  # the dense ΔW inverts its half spectrum in blocks of about this size (cache-sized)


@dataclass(frozen=True)
class Config:
    """n: number of spectral coefficients; alpha: PEFT's ``scaling``; seed: ``random_loc_seed``; init: "normal" or "zeros"."""

    n: int = 1000
    alpha: float = 150.0
    seed: int = 777
    init: str = "normal"

    def __post_init__(self):
        _common.check_int(METHOD, "n", self.n)
        _common.check_real(METHOD, "alpha", self.alpha)
        _common.check_int(METHOD, "seed", self.seed, low=-(2**63))
        _common.check_choice(METHOD, "init", self.init, ("normal", "zeros"))


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


def peft_locations(seed: int, d_out: int, d_in: int, n: int) -> np.ndarray:
    """PEFT's frequency locations for a (d_out, d_in) layer, bit-exact, without torch: (2, n) int64 [u; v].

    ``flat = torch.randperm(d_out·d_in, generator=torch.Generator().manual_seed(seed))[:n]``; u = flat // d_in, v = flat % d_in.
    """
    d_out, d_in = _common.as_shape(METHOD, (d_out, d_in))
    _common.check_int(METHOD, "n", n, high=d_out * d_in)
    _common.check_int(METHOD, "seed", seed, low=-(2**63))
    try:
        flat = _randperm.torch_randperm_prefix(int(seed), d_out * d_in, int(n))  # (n,)
    except ValueError as err:
        raise _common.fail(METHOD, f"layer shape {(d_out, d_in)}: {err}") from None
    return np.stack([flat // d_in, flat % d_in])  # (2, n)


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """spectrum ~ N(0, 1) or zeros; indices = PEFT's locations for cfg.seed."""
    d_out, d_in = _check_shape(_common.as_weight(METHOD, W).shape, cfg)
    rng = _common.as_generator(rng)
    spectrum = rng.standard_normal(cfg.n) if cfg.init == "normal" else np.zeros(cfg.n)
    return {"spectrum": spectrum, "indices": peft_locations(cfg.seed, d_out, d_in, cfg.n)}


def _ifft(a: np.ndarray) -> np.ndarray:
    return scipy.fft.ifft(a, axis=-1, workers=_WORKERS)


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    """α · Re(ifft2(F)) via the real-part identity and the sparsity of F.

    1. Fold every coefficient into the half spectrum w = 0 … N//2: cos is even, so c at (u, v) with v > N − v acts as c at
       (−u mod M, N − v). Interior columns (0 < w < N/2) carry α/2, since irfft doubles them; columns 0 and N/2 carry α.
    2. T = ifft of the C ≤ n non-zero folded columns along the output axis, held as rows (C, M): contiguous FFTs.
    3. ΔW = irfft(H) along the input axis (contiguous), H (M, N//2 + 1) holding T's columns; irfft keeps Re of columns 0, N/2.
       H is built and inverted a cache-sized block of rows at a time, so it never exists whole.
    """
    M, N = shape
    u, v = p["indices"]
    mirrored = v > N - v
    u, w = np.where(mirrored, -u % M, u), np.where(mirrored, N - v, v)  # (n,), (n,): folded locations, w ≤ N/2
    weight = np.where((w == 0) | (2 * w == N), cfg.alpha, cfg.alpha / 2)  # (n,)
    cols, col_of = np.unique(w, return_inverse=True)  # the C ≤ n distinct folded columns
    F_half = np.zeros((cols.size, M), dtype=np.complex128)  # (C, M): the folded spectrum's non-zero columns, as rows
    np.add.at(F_half, (col_of, u), weight * p["spectrum"])  # (u, v) and (−u, N − v) fold onto one location: add
    T = scipy.fft.ifft(F_half, axis=1, overwrite_x=True, workers=_WORKERS)  # (C, M)
    delta = np.empty((M, N))
    rows = max(1, _BLOCK_BYTES // (16 * (N // 2 + 1)))  # rows of H per block
    for start in range(0, M, rows):
        T_block = T[:, start : start + rows]  # (C, rows)
        H = np.zeros((T_block.shape[1], N // 2 + 1), dtype=np.complex128)  # (rows, N//2 + 1): a block of the half spectrum
        H[:, cols] = T_block.T
        block = scipy.fft.irfft(H, n=N, axis=1, overwrite_x=True, workers=_WORKERS)  # (rows, N), real; irfft divides by N
        delta[start : start + rows] = block
    return delta


_method = _spectral.additive_method(METHOD, Config, _dense_delta, _ifft, _ifft)


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW = α · Re(ifft2(F)), (d_out, d_in) float64. W gives only the shape."""
    return _method.delta_weight(W, params, cfg)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW."""
    return _method.merge(W, params, cfg)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W' − ΔW."""
    return _method.unmerge(W_merged, params, cfg)


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x Wᵀ + b + α Re(ifft(z)), z[u] = Σ_{u_k = u} c_k ifft(x)[v_k]."""
    return _method.forward(x, W, params, cfg, bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"spectrum": ∂L/∂c})."""
    return _method.vjp(x, W, params, cfg, gy)
