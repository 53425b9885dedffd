r"""LoRA: low-rank adaptation (Hu et al., 2021, arXiv 2106.09685; PEFT ``LORA``).

The update is a product of two thin matrices:

    ΔW = s · B A,        A ∈ R^{r × d_in},  B ∈ R^{d_out × r},
    s  = alpha / r       (or alpha / √r with rsLoRA, Kalajdzievski 2023).

Forward, never forming ΔW (cost r (d_in + d_out) per token instead of d_in d_out):

    y = x Wᵀ + b + s · (x Aᵀ) Bᵀ

Gradients, with gy = ∂L/∂y and G = Σ_tokens gyᵀ x the gradient with respect to ΔW:

    ∂L/∂B = s · G Aᵀ = s · Σ gyᵀ (x Aᵀ)        ∂L/∂A = s · Bᵀ G = s · Σ (gy B)ᵀ x
    ∂L/∂x = gy W + s · (gy B) A

As a product of two thin factors, for consumers that work on row blocks of ΔW (the ONNX fold):
ΔW = L R with L = s·B (d_out × r), R = A (r × d_in) — :func:`delta_factors`.

Init (PEFT's default): A ~ U(−1/√d_in, 1/√d_in) (Kaiming-uniform with a = √5), B = 0, so ΔW = 0 exactly.
Trainable parameters: r (d_in + d_out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _common

METHOD = "lora"
TRAINABLE = ("A", "B")
FROZEN = ()


@dataclass(frozen=True)
class Config:
    """r: rank; alpha: PEFT's ``lora_alpha``; use_rslora: scale by alpha/√r instead of alpha/r."""

    r: int = 8
    alpha: float = 8.0
    use_rslora: bool = False

    def __post_init__(self):
        _common.check_int(METHOD, "r", self.r)
        _common.check_real(METHOD, "alpha", self.alpha)
        if not isinstance(self.use_rslora, bool):
            raise TypeError(f"{METHOD}: config field 'use_rslora' must be a bool, got {self.use_rslora!r}")

    @property
    def scaling(self) -> float:
        """s = alpha / r, or alpha / √r with rsLoRA."""
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _check_shape(shape, cfg: Config) -> tuple[int, int]:
    _common.check_config(METHOD, cfg, Config)
    return _common.as_shape(METHOD, shape)


def param_shapes(shape, cfg: Config) -> dict[str, tuple]:
    """A (r, d_in), B (d_out, r)."""
    d_out, d_in = _check_shape(shape, cfg)
    return {"A": (cfg.r, d_in), "B": (d_out, cfg.r)}


def num_trainable(shape, cfg: Config) -> int:
    """r (d_in + d_out)."""
    d_out, d_in = _check_shape(shape, cfg)
    return cfg.r * (d_in + d_out)


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """A ~ U(−1/√d_in, 1/√d_in), B = 0."""
    d_out, d_in = _check_shape(_common.as_weight(METHOD, W).shape, cfg)
    rng = _common.as_generator(rng)
    bound = 1.0 / math.sqrt(d_in)
    return {
        "A": rng.uniform(-bound, bound, size=(cfg.r, d_in)),  # (r, d_in)
        "B": np.zeros((d_out, cfg.r)),  # (d_out, r)
    }


def _validate(params, shape, cfg: Config) -> dict:
    return _common.check_params(METHOD, params, param_shapes(shape, cfg))


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    return cfg.scaling * (p["B"] @ p["A"])  # (d_out, r) @ (r, d_in) -> (d_out, d_in)


def _delta_forward(x, p, cfg: Config, shape) -> np.ndarray:
    return cfg.scaling * ((x @ p["A"].T) @ p["B"].T)  # (T, d_in) -> (T, r) -> (T, d_out)


def _delta_adjoint(gy, p, cfg: Config, shape) -> np.ndarray:
    return cfg.scaling * ((gy @ p["B"]) @ p["A"])  # (T, d_out) -> (T, r) -> (T, d_in)


def _grads(x, gy, p, cfg: Config, shape) -> dict:
    s = cfg.scaling
    return {
        "A": s * ((gy @ p["B"]).T @ x),  # (r, T) @ (T, d_in) -> (r, d_in)
        "B": s * (gy.T @ (x @ p["A"].T)),  # (d_out, T) @ (T, r) -> (d_out, r)
    }


_method = _common.AdditiveMethod(METHOD, Config, _validate, _dense_delta, _delta_forward, _delta_adjoint, _grads)


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW = s · B A, (d_out, d_in) float64. W gives only the shape."""
    return _method.delta_weight(W, params, cfg)


def delta_factors(W, params, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(L, R) with ΔW = L R: L = s·B (d_out, r), R = A (r, d_in), float64. W gives only the shape."""
    _, p = _method.checked(W, params, cfg)
    return cfg.scaling * p["B"], p["A"]  # (d_out, r), (r, d_in)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW."""
    return _method.merge(W, params, cfg)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W' − ΔW."""
    return _method.unmerge(W_merged, params, cfg)


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x Wᵀ + b + s (x Aᵀ) Bᵀ for x of shape (..., d_in)."""
    return _method.forward(x, W, params, cfg, bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"A": ∂L/∂A, "B": ∂L/∂B}) for upstream gradient gy (..., d_out)."""
    return _method.vjp(x, W, params, cfg, gy)
