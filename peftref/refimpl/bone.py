r"""Bone: block-affine shard sharing (Kang, arXiv 2409.15371 "DiSHA"; PEFT ``MISS`` default and ``mini``, formerly ``BONE``).

One small block D is shared by every shard of the weight: cut the input axis into contiguous chunks of width r and add the
same D to each chunk (a last partial chunk of width d_in mod r uses the first rows of D). No scaling factor:

    ΔW[o, i] = D[i mod r, o]                    D ∈ R^{r × d_out}
    ΔW[o, i] = D_m[i mod r, o mod mini_r]       "mini": D_m ∈ R^{r × mini_r} tiled along the output axis

Efficient forward: zero-pad x to a multiple of r, reshape to (…, ⌈d_in/r⌉, r) and sum the chunks, S ∈ R^{… × r}; then

    y = x Wᵀ + b + S D

The adjoint tiles gy Dᵀ (…, r) back to d_in columns; the gradient is ∂L/∂D = Σ_tokens Sᵀ gy (mini: then sum the tiles).

Trainable: D (r, d_out), or (r, mini_r) for mini: r·d_out (mini: r·mini_r) parameters. Init: zeros, so ΔW = 0.
PEFT stores D as ``miss_block`` (legacy ``bone_block``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common

METHOD = "bone"
TRAINABLE = ("D",)
FROZEN = ()


@dataclass(frozen=True)
class Config:
    """r: chunk width (1 ≤ r ≤ d_in); mini_r: width of the shared output tile (must divide d_out), None for plain Bone."""

    r: int = 64
    mini_r: int | None = None

    def __post_init__(self):
        _common.check_int(METHOD, "r", self.r)
        if self.mini_r is not None:
            _common.check_int(METHOD, "mini_r", self.mini_r)


def _check_shape(shape, cfg: Config) -> tuple[int, int]:
    _common.check_config(METHOD, cfg, Config)
    d_out, d_in = _common.as_shape(METHOD, shape)
    if cfg.r > d_in:
        raise _common.fail(METHOD, f"config field 'r' must be <= d_in = {d_in}, got {cfg.r}")
    if cfg.mini_r is not None and d_out % cfg.mini_r:
        raise _common.fail(METHOD, f"config field 'mini_r' = {cfg.mini_r} must divide d_out = {d_out}")
    return d_out, d_in


def param_shapes(shape, cfg: Config) -> dict[str, tuple]:
    """D (r, d_out), or (r, mini_r)."""
    d_out, _ = _check_shape(shape, cfg)
    return {"D": (cfg.r, d_out if cfg.mini_r is None else cfg.mini_r)}


def num_trainable(shape, cfg: Config) -> int:
    """r·d_out (mini: r·mini_r)."""
    d_out, _ = _check_shape(shape, cfg)
    return cfg.r * (d_out if cfg.mini_r is None else cfg.mini_r)


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """D = 0. (`rng` is checked for a uniform API; nothing is drawn.)"""
    _common.as_generator(rng)
    return {name: np.zeros(shape) for name, shape in param_shapes(_common.as_weight(METHOD, W).shape, cfg).items()}


def _validate(params, shape, cfg: Config) -> dict:
    return _common.check_params(METHOD, params, param_shapes(shape, cfg))


def _full_block(p, shape) -> np.ndarray:
    """D tiled to width d_out: (r, d_out)."""
    D = p["D"]
    return np.tile(D, (1, shape[0] // D.shape[1]))  # (r, d_out)


def _chunk_sum(x: np.ndarray, r: int) -> np.ndarray:
    """(T, d_in) -> (T, r): zero-pad to a multiple of r and sum the chunks."""
    T, d_in = x.shape
    padded = np.pad(x, ((0, 0), (0, -d_in % r)))  # (T, ⌈d_in/r⌉·r)
    return padded.reshape(T, -1, r).sum(axis=1)  # (T, ⌈d_in/r⌉, r) -> (T, r)


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    d_out, d_in = shape
    return _full_block(p, shape).T[:, np.arange(d_in) % cfg.r]  # (d_out, r) -> (d_out, d_in)


def _delta_forward(x, p, cfg: Config, shape) -> np.ndarray:
    return _chunk_sum(x, cfg.r) @ _full_block(p, shape)  # (T, r) @ (r, d_out)


def _delta_adjoint(gy, p, cfg: Config, shape) -> np.ndarray:
    return (gy @ _full_block(p, shape).T)[:, np.arange(shape[1]) % cfg.r]  # (T, r) -> (T, d_in)


def _grads(x, gy, p, cfg: Config, shape) -> dict:
    dD = _chunk_sum(x, cfg.r).T @ gy  # (r, T) @ (T, d_out) -> (r, d_out)
    width = p["D"].shape[1]
    return {"D": dD.reshape(cfg.r, -1, width).sum(axis=1)}  # sum the tiles: (r, d_out/width, width) -> (r, width)


_method = _common.AdditiveMethod(METHOD, Config, _validate, _dense_delta, _delta_forward, _delta_adjoint, _grads)


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW[o, i] = D[i mod r, o], (d_out, d_in) float64. W gives only the shape."""
    return _method.delta_weight(W, params, cfg)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW."""
    return _method.merge(W, params, cfg)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W' − ΔW."""
    return _method.unmerge(W_merged, params, cfg)


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x Wᵀ + b + S D, S the chunk sum of x."""
    return _method.forward(x, W, params, cfg, bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"D": ∂L/∂D})."""
    return _method.vjp(x, W, params, cfg, gy)
