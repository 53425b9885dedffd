r"""SVD re-scaling (林志鹏 et al., "Adaptation fine-tuning based on singular value decomposition", 计算机系统应用 2024).

Only the abstract is public: "only the diagonal matrix and the scaling vector obtained from SVD are trainable". This module is a
*reconstruction*, the reading that fits every phrase of the abstract (a published twin with the same structure is OSoRA,
arXiv 2505.14350).

Frozen, computed once from W in float64: the top-r SVD W ≈ U_r diag(σ⁰) V_rᵀ, U_r ∈ R^{d_out × r}, V_r ∈ R^{d_in × r}.
Trainable: the singular values s ∈ R^r (init σ⁰) and an output scaling vector b ∈ R^{d_out} (init 1):

    ΔW = (diag(b) U_r diag(s) − U_r diag(σ⁰)) V_rᵀ

exactly 0 at init when computed in this factored order. Its thin factors, for consumers that work on row blocks of ΔW
(the ONNX fold), are ΔW = L R with L = diag(b) U_r diag(s) − U_r diag(σ⁰) (d_out × r), R = V_rᵀ (r × d_in) —
:func:`delta_factors`. With r = min(d_out, d_in), W + ΔW = diag(b) U diag(s) Vᵀ up to rounding.

Forward, with z = x V_r (…, r):

    x ΔWᵀ = b ⊙ ((z ⊙ s) U_rᵀ) − (z ⊙ σ⁰) U_rᵀ
    gy ΔW = (((gy ⊙ b) U_r) ⊙ s − (gy U_r) ⊙ σ⁰) V_rᵀ                       (the adjoint)
    ∂L/∂b = Σ_tokens gy ⊙ ((z ⊙ s) U_rᵀ),   ∂L/∂s = Σ_tokens z ⊙ ((gy ⊙ b) U_r)

Flipping the sign of a singular pair (u_i, v_i) changes nothing. Trainable parameters: r + d_out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common

METHOD = "svd_rescale"
TRAINABLE = ("s", "b")
FROZEN = ("U", "V", "sigma0")


@dataclass(frozen=True)
class Config:
    """r: number of singular triplets kept (1 ≤ r ≤ min(d_out, d_in))."""

    r: int = 8

    def __post_init__(self):
        _common.check_int(METHOD, "r", self.r)


def _check_shape(shape, cfg: Config) -> tuple[int, int]:
    _common.check_config(METHOD, cfg, Config)
    d_out, d_in = _common.as_shape(METHOD, shape)
    if cfg.r > min(d_out, d_in):
        raise _common.fail(METHOD, f"config field 'r' must be <= min(d_out, d_in) = {min(d_out, d_in)}, got {cfg.r}")
    return d_out, d_in


def param_shapes(shape, cfg: Config) -> dict[str, tuple]:
    """s (r,), b (d_out,); frozen U (d_out, r), V (d_in, r), sigma0 (r,)."""
    d_out, d_in = _check_shape(shape, cfg)
    return {"s": (cfg.r,), "b": (d_out,), "U": (d_out, cfg.r), "V": (d_in, cfg.r), "sigma0": (cfg.r,)}


def num_trainable(shape, cfg: Config) -> int:
    """r + d_out."""
    d_out, _ = _check_shape(shape, cfg)
    return cfg.r + d_out


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """Top-r SVD of W in float64; s = σ⁰, b = 1. (`rng` is checked for a uniform API; nothing is drawn.)"""
    W = _common.as_weight(METHOD, W)
    _check_shape(W.shape, cfg)
    _common.as_generator(rng)
    U, sigma, Vt = np.linalg.svd(W, full_matrices=False)  # (d_out, m), (m,), (m, d_in)
    U_r, sigma0, V_r = U[:, : cfg.r], sigma[: cfg.r], Vt[: cfg.r].T  # (d_out, r), (r,), (d_in, r)
    return {"s": sigma0.copy(), "b": np.ones(W.shape[0]), "U": U_r, "V": V_r, "sigma0": sigma0}


def _validate(params, shape, cfg: Config) -> dict:
    return _common.check_params(METHOD, params, param_shapes(shape, cfg))


def _left_factor(p) -> np.ndarray:
    """L = diag(b) U_r diag(s) − U_r diag(σ⁰), (d_out, r)."""
    U = p["U"]
    return (p["b"][:, None] * U) * p["s"] - U * p["sigma0"]


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    return _left_factor(p) @ p["V"].T  # (d_out, r) @ (r, d_in)


def _delta_forward(x, p, cfg: Config, shape) -> np.ndarray:
    z = x @ p["V"]  # (T, r)
    return p["b"] * ((z * p["s"]) @ p["U"].T) - (z * p["sigma0"]) @ p["U"].T  # (T, d_out)


def _delta_adjoint(gy, p, cfg: Config, shape) -> np.ndarray:
    inner = ((gy * p["b"]) @ p["U"]) * p["s"] - (gy @ p["U"]) * p["sigma0"]  # (T, r)
    return inner @ p["V"].T  # (T, d_in)


def _grads(x, gy, p, cfg: Config, shape) -> dict:
    z = x @ p["V"]  # (T, r)
    return {
        "s": np.sum(z * ((gy * p["b"]) @ p["U"]), axis=0),  # (r,)
        "b": np.sum(gy * ((z * p["s"]) @ p["U"].T), axis=0),  # (d_out,)
    }


_method = _common.AdditiveMethod(METHOD, Config, _validate, _dense_delta, _delta_forward, _delta_adjoint, _grads)


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW = (diag(b) U_r diag(s) − U_r diag(σ⁰)) V_rᵀ, (d_out, d_in) float64. W gives only the shape."""
    return _method.delta_weight(W, params, cfg)


def delta_factors(W, params, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(L, R) with ΔW = L R: L = diag(b) U_r diag(s) − U_r diag(σ⁰) (d_out, r), R = V_rᵀ (r, d_in), float64. W gives only the shape."""
    _, p = _method.checked(W, params, cfg)
    return _left_factor(p), p["V"].T  # (d_out, r), (r, d_in)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW."""
    return _method.merge(W, params, cfg)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W' − ΔW."""
    return _method.unmerge(W_merged, params, cfg)


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x Wᵀ + b + b_out ⊙ ((z ⊙ s) U_rᵀ) − (z ⊙ σ⁰) U_rᵀ, z = x V_r."""
    return _method.forward(x, W, params, cfg, bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"s": ∂L/∂s, "b": ∂L/∂b})."""
    return _method.vjp(x, W, params, cfg, gy)
