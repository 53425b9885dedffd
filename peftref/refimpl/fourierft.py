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

Fast ΔW (the exporter's hot path). Re(ifft2(F)) = ifft2(H) with H = (F[u, v] + conj-mirror F[−u, −v]) / 2 Hermitian,
so after transforming the ≤ n non-zero columns along the output axis, one real inverse FFT (``irfft``) along the input axis
finishes the job on half the spectrum: about a quarter of a dense complex ``ifft2``.

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
    d_out, d_in = _common.as_shape(METHOD, shape)
    if cfg.n > d_out * d_in:
        raise _common.fail(METHOD, f"config field 'n' must be <= d_out·d_in = {d_out * d_in} for shape {(d_out, d_in)}, got {cfg.n}")
    return d_out, d_in


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


def _validate(params, shape, cfg: Config) -> dict:
    return _spectral.validate(METHOD, params, _check_shape(shape, cfg), cfg.n)


def _ifft(a: np.ndarray) -> np.ndarray:
    return scipy.fft.ifft(a, axis=-1, workers=_WORKERS)


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    """α · Re(ifft2(F)) via the real-part identity and the sparsity of F."""
    M, N = shape
    u, v = p["indices"]
    cols, col_of = np.unique(v, return_inverse=True)  # the C ≤ n distinct input frequencies
    F_cols = np.zeros((M, cols.size), dtype=np.complex128)  # (M, C): the non-zero columns of F
    F_cols[u, col_of] = p["spectrum"]
    T = scipy.fft.ifft(F_cols, axis=0, workers=_WORKERS)  # (M, C): ifft along the output axis
    # Hermitian half along the input axis: H[:, v] = (T[:, v] + conj(T[:, −v mod N])) / 2 for v = 0 … N//2.
    H = np.zeros((M, N // 2 + 1), dtype=np.complex128)  # (M, N//2 + 1)
    direct = cols <= N // 2
    H[:, cols[direct]] += T[:, direct] / 2
    mirrored = (-cols) % N <= N // 2
    H[:, (-cols[mirrored]) % N] += np.conj(T[:, mirrored]) / 2
    return cfg.alpha * scipy.fft.irfft(H, n=N, axis=1, workers=_WORKERS)  # (M, N), real, divides by N


def _delta_forward(x, p, cfg: Config, shape) -> np.ndarray:
    return _spectral.delta_forward(x, p, cfg.alpha, shape, _ifft, _ifft)


def _delta_adjoint(gy, p, cfg: Config, shape) -> np.ndarray:
    return _spectral.delta_adjoint(gy, p, cfg.alpha, shape, _ifft, _ifft)


def _grads(x, gy, p, cfg: Config, shape) -> dict:
    return {"spectrum": _spectral.spectrum_grad(x, gy, p, cfg.alpha, _ifft)}


_method = _common.AdditiveMethod(METHOD, Config, _validate, _dense_delta, _delta_forward, _delta_adjoint, _grads)


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
