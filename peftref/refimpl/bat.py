r"""Bat: block-affine transformation (Kang, arXiv 2409.15371 "DiSHA"; PEFT ``MISS`` with ``init_weights="bat"``).

Cut W into r × r blocks W_ij = W[i r:(i+1) r, j r:(j+1) r] (r must divide d_in and d_out). Each output-row block i owns one
trainable r × r matrix B_i, shared across the input-column blocks j, and the update mixes it with the frozen weight:

    ΔW_ij = W_ij B_i + B_i = (W_ij + I) B_i,        B ∈ R^{(d_out/r) × r × r}

The update depends on W: Bat is not additive. merge: W' = W + ΔW(W). unmerge inverts the affine map block by block,

    W_ij = (W'_ij − B_i)(I + B_i)⁻¹

solved (never inverted) in float64; a singular or ill-conditioned I + B_i is refused with an error naming block i.
Forward: y = x (W + ΔW(W))ᵀ + b. Gradient, with G = Σ_tokens gyᵀ x cut into the same blocks:

    ∂L/∂B_i = Σ_j (W_ij + I)ᵀ G_ij,        ∂L/∂x = gy (W + ΔW)

Several Bat adapters compose in sequence (each sees the weight merged so far), not by adding their ΔW.
Trainable parameters: (d_out/r)·r² = r·d_out. Init: zeros, so ΔW = 0. PEFT stores B as ``miss_block``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common

METHOD = "bat"
TRAINABLE = ("B",)
FROZEN = ()
#: unmerge refuses a block whose I + B_i has a larger 2-norm condition number (float64 keeps ~16 digits; this keeps ≥ 6).
MAX_CONDITION = 1e10


@dataclass(frozen=True)
class Config:
    """r: block size; must divide d_in and d_out."""

    r: int = 64

    def __post_init__(self):
        _common.check_int(METHOD, "r", self.r)


def _check_shape(shape, cfg: Config) -> tuple[int, int]:
    _common.check_config(METHOD, cfg, Config)
    d_out, d_in = _common.as_shape(METHOD, shape)
    if d_out % cfg.r or d_in % cfg.r:
        raise _common.fail(METHOD, f"config field 'r' = {cfg.r} must divide both d_out = {d_out} and d_in = {d_in}")
    return d_out, d_in


def param_shapes(shape, cfg: Config) -> dict[str, tuple]:
    """B (d_out/r, r, r)."""
    d_out, _ = _check_shape(shape, cfg)
    return {"B": (d_out // cfg.r, cfg.r, cfg.r)}


def num_trainable(shape, cfg: Config) -> int:
    """r·d_out."""
    d_out, _ = _check_shape(shape, cfg)
    return cfg.r * d_out


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """B = 0. (`rng` is checked for a uniform API; nothing is drawn.)"""
    _common.as_generator(rng)
    return {"B": np.zeros(param_shapes(_common.as_weight(METHOD, W).shape, cfg)["B"])}


def _checked(W, params, cfg: Config, name: str = "W") -> tuple[np.ndarray, np.ndarray]:
    _common.check_config(METHOD, cfg, Config)
    W = _common.as_float64(METHOD, name, W, ndim=2)
    p = _common.check_params(METHOD, params, param_shapes(W.shape, cfg))
    return W, p["B"]


def _blocks(W: np.ndarray, r: int) -> np.ndarray:
    """(d_out, d_in) -> (d_out/r, d_in/r, r, r), [i, j] = W_ij."""
    d_out, d_in = W.shape
    return W.reshape(d_out // r, r, d_in // r, r).transpose(0, 2, 1, 3)


def _unblocks(blocks: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_blocks`."""
    n_out, n_in, r, _ = blocks.shape
    return blocks.transpose(0, 2, 1, 3).reshape(n_out * r, n_in * r)


def _delta(W: np.ndarray, B: np.ndarray) -> np.ndarray:
    Wb = _blocks(W, B.shape[-1])  # (n_out, n_in, r, r)
    return _unblocks(Wb @ B[:, None] + B[:, None])  # (W_ij + I) B_i, broadcast over j


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW_ij = (W_ij + I) B_i, (d_out, d_in) float64. Depends on W's values."""
    W, B = _checked(W, params, cfg)
    return _delta(W, B)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW(W)."""
    W, B = _checked(W, params, cfg)
    return W + _delta(W, B)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W_ij = (W'_ij − B_i)(I + B_i)⁻¹, solved per block; refuses an ill-conditioned I + B_i."""
    W_merged, B = _checked(W_merged, params, cfg, name="W_merged")
    r = cfg.r
    I_plus_B = np.eye(r) + B  # (n_out, r, r)
    for i, block in enumerate(I_plus_B):
        condition = np.linalg.cond(block)
        if not np.isfinite(condition) or condition > MAX_CONDITION:
            raise _common.fail(
                METHOD,
                f"cannot unmerge: I + B[{i}] (output rows {i * r}..{(i + 1) * r - 1}) is singular or ill-conditioned "
                f"(condition number {condition:.3g} > {MAX_CONDITION:.0e})",
            )
    R = _blocks(W_merged, r) - B[:, None]  # (n_out, n_in, r, r): W'_ij − B_i
    # X (I + B_i) = R  <=>  (I + B_i)ᵀ Xᵀ = Rᵀ
    X_T = np.linalg.solve(np.swapaxes(I_plus_B, -1, -2)[:, None], np.swapaxes(R, -1, -2))
    return _unblocks(np.swapaxes(X_T, -1, -2))


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x (W + ΔW(W))ᵀ + b."""
    W, B = _checked(W, params, cfg)
    x = _common.as_tokens(METHOD, "x", x, W.shape[1], "d_in")
    bias = _common.as_bias(METHOD, bias, W.shape[0])
    return _common.base_forward(x, W + _delta(W, B), bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"B": ∂L/∂B}) with ∂L/∂B_i = Σ_j (W_ij + I)ᵀ G_ij."""
    x, W, gy = _common.check_vjp_inputs(METHOD, x, W, gy)
    W, B = _checked(W, params, cfg)
    x2, gy2 = _common.token_matrix(x), _common.token_matrix(gy)  # (T, d_in), (T, d_out)
    G = _blocks(gy2.T @ x2, cfg.r)  # (n_out, n_in, r, r)
    Wb_plus_I = _blocks(W, cfg.r) + np.eye(cfg.r)  # (n_out, n_in, r, r)
    dB = np.einsum("ijpq,ijpk->iqk", Wb_plus_I, G)  # Σ_j (W_ij + I)ᵀ G_ij: (n_out, r, r)
    gx = gy2 @ (W + _delta(W, B))  # (T, d_in)
    return gx.reshape(x.shape), {"B": dB}
