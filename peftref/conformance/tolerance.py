r"""How close a candidate's output must be to the float64 reference, and how the error is measured.

The error of an output is measured against the *magnitude of the terms that form it*, not against the output itself:

    err = max |got − expected| / scale,    scale = max of the output computed on absolute values

e.g. forward: scale = max (|x| (|W| + |ΔW|⁺)ᵀ + |b|), where |ΔW|⁺ bounds every partial sum of ΔW (LoRA: |s| |B| |A|; FourierFT:
α/(MN) ‖c‖₁; sDCTFT: α (2/√(MN)) ‖c‖₁; SVD re-scaling: |b| |U| |s| |V|ᵀ + |U| σ⁰ |V|ᵀ; Bone, Bat, DCFT: the method itself on
absolute values). Floating-point rounding is proportional to these magnitudes (the componentwise bound of a sum), so an output
that is small by cancellation (a lone y that nearly sums to zero) gets the absolute precision its terms allow instead of an
impossible relative one. A check passes when err ≤ tol(dtype) for every output it compares, with

    tol(dtype) = C_class · κ · ε(dtype) · √K

- ε(dtype) is the machine epsilon: 2.2e-16 (float64), 1.19e-7 (float32).
- K = T·(d_in + d_out) + d_in·d_out is the longest sum a sensible implementation forms: a token's output sums d_in products
  plus the adapter's inner sum (at most d_out·d_in terms when ΔW is formed densely, e.g. FourierFT as a dense DFT), and a
  parameter gradient sums T tokens of such products. The rounding error of a sum of K terms of random sign grows like √K.
- C_class = 8 for the "linear" methods (lora, dcft, bone, svd_rescale) and for "solve" (bat), 16 for "spectral" (fourierft,
  sdctft: each FFT/DCT pass adds O(log N) rounding). The factor 8 also covers float32 mode, where the inputs are first
  rounded to float32 (relative error ε/2 each) and enter every output once more.
- κ is the largest 2-norm condition number of I + B_i for bat (its unmerge solves with I + B_i, which amplifies rounding by
  κ), 1 for every other method.

Every wrong convention the suite is built to catch (a transposed kernel, a missing 1/(MN), a missing scaling, chunks of the
wrong width) moves outputs by a sizeable fraction of their scale (at least ~1/√K of it), far above every bound: the float32
bounds of the vectors are below 1e-4, the float64 ones below 1e-12.
"""

from __future__ import annotations

import math

import numpy as np

from .. import refimpl
from ..refimpl import dcft

EPSILON = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}
DTYPES = tuple(EPSILON)
CLASS_OF_METHOD = {
    "lora": "linear",
    "fourierft": "spectral",
    "sdctft": "spectral",
    "dcft": "linear",
    "bone": "linear",
    "bat": "solve",
    "svd_rescale": "linear",
}
CLASS_FACTOR = {"linear": 8.0, "spectral": 16.0, "solve": 8.0}


def reduction_length(shape: tuple[int, int], tokens: int) -> int:
    """K = T·(d_in + d_out) + d_in·d_out."""
    d_out, d_in = shape
    return max(tokens, 1) * (d_in + d_out) + d_in * d_out


def tolerance(method: str, shape: tuple[int, int], tokens: int, condition: float = 1.0) -> dict:
    """{"class", "reduction", "condition", "float64", "float32"}: the bound of each dtype, rounded to 3 significant digits."""
    cls = CLASS_OF_METHOD[method]
    K = reduction_length(shape, tokens)
    bound = {dtype: float(f"{CLASS_FACTOR[cls] * condition * eps * math.sqrt(K):.3g}") for dtype, eps in EPSILON.items()}
    return {"class": cls, "reduction": K, "condition": float(f"{condition:.3g}"), **bound}


def _absolute(params: dict) -> dict:
    return {name: np.abs(value) for name, value in params.items()}


def delta_magnitude(method: str, W: np.ndarray, params: dict, cfg) -> np.ndarray:
    """|ΔW|⁺ (d_out, d_in): an entrywise bound on every term that sums to an entry of ΔW."""
    M, N = W.shape
    if method == "fourierft":  # ΔW[p, q] = α/(MN) Σ_k c_k cos(…)
        return np.full(W.shape, abs(cfg.alpha) * np.abs(params["spectrum"]).sum() / (M * N))
    if method == "sdctft":  # |φ_M(u)[i] φ_N(v)[j]| ≤ 2/√(MN)
        return np.full(W.shape, abs(cfg.alpha) * np.abs(params["spectrum"]).sum() * 2 / math.sqrt(M * N))
    if method == "svd_rescale":  # ΔW = P − Q: both terms
        U, V = np.abs(params["U"]), np.abs(params["V"])
        return (np.abs(params["b"])[:, None] * U * np.abs(params["s"])) @ V.T + (U * params["sigma0"]) @ V.T
    if method == "dcft":  # conv_transpose of |B| |A| with |Cᵀ|
        return abs(cfg.scaling) * dcft.conv_transpose(np.abs(params["B"]) @ np.abs(params["A"]), np.abs(params["C"]).T, cfg.stride)
    return np.abs(refimpl.get(method).delta_weight(np.abs(W), _absolute(params), cfg))  # lora, bone, bat: products only


def grad_magnitudes(method: str, x: np.ndarray, W: np.ndarray, params: dict, cfg, gy: np.ndarray) -> dict[str, float]:
    """max of a bound on every term of each trainable gradient."""
    x2, gy2 = np.abs(x.reshape(-1, x.shape[-1])), np.abs(gy.reshape(-1, gy.shape[-1]))  # (T, d_in), (T, d_out)
    M, N = W.shape
    tokens = float(np.sum(gy2.sum(axis=1) * x2.sum(axis=1)))  # Σ_t ‖gy_t‖₁ ‖x_t‖₁
    if method == "fourierft":  # |fft(a)[u]| ≤ ‖a‖₁
        return {"spectrum": abs(cfg.alpha) * tokens / (M * N)}
    if method == "sdctft":  # |dct(a)[u]| ≤ √(2/len) ‖a‖₁
        return {"spectrum": abs(cfg.alpha) * tokens * 2 / math.sqrt(M * N)}
    _, grads = refimpl.get(method).vjp(x2, np.abs(W), _absolute(params), cfg, gy2)  # products and sums only
    return {name: float(np.abs(g).max(initial=0.0)) for name, g in grads.items()}


def magnitude_scales(method: str, inputs: dict, params: dict, cfg) -> dict[str, float]:
    """The scale of every expected output of a valid case (see the module docstring), rounded to 6 significant digits."""
    W, x, gy, bias = (inputs[k] for k in ("W", "x", "gy", "bias"))
    x2, gy2 = np.abs(x.reshape(-1, x.shape[-1])), np.abs(gy.reshape(-1, gy.shape[-1]))
    D = delta_magnitude(method, W, params, cfg)  # (d_out, d_in)
    W_abs = np.abs(W) + D  # bounds W + ΔW term by term
    scales = {
        "delta_weight": D.max(),
        "forward": (x2 @ W_abs.T).max(),
        "forward_bias": (x2 @ W_abs.T + np.abs(bias)).max(),
        "merge": W_abs.max(),
        "unmerge": (W_abs + D).max(),  # W' − ΔW with |W'| ≤ |W| + |ΔW|⁺
        "gx": (gy2 @ W_abs).max(),
    } | {f"grad/{name}": value for name, value in grad_magnitudes(method, x, W, params, cfg, gy).items()}
    return {name: float(f"{value:.6g}") for name, value in scales.items()}


def scaled_error(got: np.ndarray, expected: np.ndarray, scale: float) -> tuple[float, float]:
    """(max |got − expected|, that divided by `scale`); inf when the scale is 0 and got differs."""
    abs_err = float(np.max(np.abs(got.astype(np.float64) - expected), initial=0.0))
    if scale == 0.0:
        return abs_err, 0.0 if abs_err == 0.0 else math.inf
    return abs_err, abs_err / scale
