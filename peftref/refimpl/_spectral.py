r"""What FourierFT and sDCTFT share: a sparse spectrum S (d_out × d_in) with n entries c_k at (u_k, v_k),
and a pair of 1-D transforms — an *analysis* A (what is applied to activations) and a *synthesis* Σ (what turns
the sparse spectrum back into space), so that

    ΔW = α · Re(Σ_M S Σ_Nᵀ)                    (Σ applied along both axes of S)
    x ΔWᵀ = α · Re(Σ(A(x) Sᵀ))                 per token: gather A(x) at v_k, scale by c_k, scatter to u_k, synthesise
    gy ΔW = α · Re(Σ(A(gy) S))                 the adjoint, u and v exchanged
    ∂L/∂c_k = α · Re(Σ_tokens A(gy)[u_k] · A(x)[v_k])

FourierFT: A = Σ = numpy's ``ifft`` (which divides by its length). sDCTFT: A = ``dct`` and Σ = ``idct`` (type 2, orthonormal; Re is a no-op).
For the DFT the gradient identity uses fft(a) = len(a) · conj(ifft(a)) for real a, so α/(MN)·Re(fft(gy)[u] fft(x)[v])
= α·Re(ifft(gy)[u] ifft(x)[v]), the form above.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse

from . import _common

Transform = Callable[[np.ndarray], np.ndarray]  # along the last axis


def check_indices(method: str, indices: np.ndarray, shape: tuple[int, int]) -> None:
    """indices (2, n): rows in [0, d_out), columns in [0, d_in), all (u, v) pairs distinct."""
    d_out, d_in = shape
    u, v = indices
    if u.size and (u.min() < 0 or u.max() >= d_out):
        raise _common.fail(method, f"parameter 'indices' row (u) values must be in [0, {d_out}), got range [{u.min()}, {u.max()}]")
    if v.size and (v.min() < 0 or v.max() >= d_in):
        raise _common.fail(method, f"parameter 'indices' column (v) values must be in [0, {d_in}), got range [{v.min()}, {v.max()}]")
    flat = u * d_in + v
    locations, counts = np.unique(flat, return_counts=True)
    if np.any(counts > 1):
        dup = int(locations[counts > 1][0])
        raise _common.fail(method, f"parameter 'indices' has duplicate location (u={dup // d_in}, v={dup % d_in}); locations must be distinct")


def check_shape(method: str, shape, cfg, config_type: type) -> tuple[int, int]:
    """(d_out, d_in) for a `config_type` cfg whose n fits: 1 ≤ n ≤ d_out·d_in."""
    _common.check_config(method, cfg, config_type)
    d_out, d_in = _common.as_shape(method, shape)
    if cfg.n > d_out * d_in:
        raise _common.fail(method, f"config field 'n' must be <= d_out·d_in = {d_out * d_in} for shape {(d_out, d_in)}, got {cfg.n}")
    return d_out, d_in


def validate(method: str, params, shape, n: int) -> dict:
    """spectrum (n,) float64 and indices (2, n) int64, checked."""
    p = _common.check_params(method, params, {"spectrum": (n,), "indices": (2, n)}, index_names=("indices",))
    check_indices(method, p["indices"], shape)
    return p


def sparse_spectrum(p: dict, shape: tuple[int, int]) -> scipy.sparse.csr_matrix:
    """S (d_out, d_in) with S[u_k, v_k] = c_k."""
    u, v = p["indices"]
    return scipy.sparse.csr_matrix((p["spectrum"], (u, v)), shape=shape)


def delta_forward(x, p, alpha: float, shape, analysis: Transform, synthesis: Transform) -> np.ndarray:
    """x ΔWᵀ = α Re(Σ(A(x) Sᵀ)) for x (T, d_in) -> (T, d_out)."""
    S = sparse_spectrum(p, shape)  # (d_out, d_in), n non-zeros
    z = (S @ analysis(x).T).T  # (d_out, d_in) @ (d_in, T) -> (T, d_out)
    return alpha * np.real(synthesis(z))


def delta_adjoint(gy, p, alpha: float, shape, analysis: Transform, synthesis: Transform) -> np.ndarray:
    """gy ΔW = α Re(Σ(A(gy) S)) for gy (T, d_out) -> (T, d_in)."""
    S = sparse_spectrum(p, shape)
    z = (S.T @ analysis(gy).T).T  # (d_in, d_out) @ (d_out, T) -> (T, d_in)
    return alpha * np.real(synthesis(z))


def spectrum_grad(x, gy, p, alpha: float, analysis: Transform) -> np.ndarray:
    """∂L/∂c_k = α Re(Σ_tokens A(gy)[u_k] A(x)[v_k]), never building G."""
    u, v = p["indices"]
    ax = analysis(x)[:, v]  # (T, n)
    agy = analysis(gy)[:, u]  # (T, n)
    return alpha * np.real(np.einsum("tk,tk->k", agy, ax))


def additive_method(method: str, config_type: type, dense_delta, analysis: Transform, synthesis: Transform) -> _common.AdditiveMethod:
    """The :class:`~peftref.refimpl._common.AdditiveMethod` of a sparse-spectrum method with the transform pair (A, Σ)."""

    def validated(params, shape, cfg) -> dict:
        return validate(method, params, check_shape(method, shape, cfg, config_type), cfg.n)

    return _common.AdditiveMethod(
        method,
        config_type,
        validated,
        dense_delta,
        lambda x, p, cfg, shape: delta_forward(x, p, cfg.alpha, shape, analysis, synthesis),
        lambda gy, p, cfg, shape: delta_adjoint(gy, p, cfg.alpha, shape, analysis, synthesis),
        lambda x, gy, p, cfg, shape: {"spectrum": spectrum_grad(x, gy, p, cfg.alpha, analysis)},
    )
