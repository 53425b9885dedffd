"""Shared pieces of the peftref.torch tests: adapted torch layers drawn by Hypothesis, and the tolerance policy.

The method/shape/config/parameter draws are the refimpl tests' own strategies (tests/refimpl/refimpl_strategies.py), so both
suites cover the same cases; this module adds what torch brings: the base dtype, the layer type (nn.Linear or GPT-2 Conv1D)
and the bias.

Tolerances (max-norm error ≤ tolerance, each compared array against the float64 reference):
  - float64 base (float64 adapter): 1e-10 relative to the array's scale. Float64 rounding is ~1e-16 per operation; FFTs,
    sums over ≤ 48 terms and small solves lose at most a few hundred ulps, so 1e-10 leaves a wide margin and still fails on
    any real mistake (a wrong sign, index or scale moves errors to O(1)).
  - float32 base (float32 adapter): 1e-5 relative to the scale: unit roundoff 6e-8 times sums of ≤ 48 terms and log-depth
    FFTs stays below 1e-5 by ≥ 10×.
  - bf16 / fp16 bases (float32 adapters): the base layer computes in its storage dtype, so outputs carry that dtype's rounding.
    A dot product of length d accumulated (worst case) in the storage dtype errs by ≤ d·u·Σ|terms| (u = unit roundoff,
    2⁻⁸ bf16, 2⁻¹¹ fp16); the adapter branch adds one rounding when cast back and one when added: (d + 2)·u·scale, plus the
    float32 term. Adapter *parameter* gradients see exact upcasts of x and gy, so they keep the float32 tolerance.
Each tolerance is relative to the *magnitude of the terms summed* (rounding errors are bounded by it, whatever the order of
summation and however much the terms cancel): |ΔW|⁺ is ΔW evaluated on absolute values (|s| |B| |A| for LoRA, (|W| + I) |B|
for Bat, …; for the spectral methods the bound |α| ‖c‖₁ max|φ_u| max|φ_v|), an output's scale is
max_t Σ_i |x_ti| (|W_oi| + |ΔW|⁺_oi) + |b_o|, a parameter gradient's the reference vjp of absolute values (spectral
methods: |α| Σ_t max|A(gy_t)| max|A(x_t)|), and a weight's max (|W| + |ΔW|⁺).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st
from transformers.pytorch_utils import Conv1D

import peftref.torch as pt
from peftref import refimpl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "refimpl"))
from refimpl_strategies import Case, batch_shapes, cases  # noqa: E402  (the refimpl suite's strategies, shared)

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: unit roundoff u of each storage dtype (half the distance from 1 to the next number).
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24, "bfloat16": 2.0**-8, "float16": 2.0**-11}
#: relative tolerance of adapter arithmetic: float64 adapters for a float64 base, float32 adapters otherwise.
ADAPTER_RTOL = {"float64": 1e-10, "float32": 1e-5, "bfloat16": 1e-5, "float16": 1e-5}
LOW_PRECISION = ("bfloat16", "float16")


@dataclass
class TorchCase:
    """A Case (method, cfg, W, params, rng) realised as a torch layer of a given base dtype and type."""

    case: Case
    dtype: str
    conv1d: bool
    layer: pt.AdaptedLayer
    W: np.ndarray  # the stored base weight, (d_out, d_in) float64 (exact: every storage dtype embeds in float64)
    bias: np.ndarray | None  # the stored bias, float64
    batch: tuple

    @property
    def method(self) -> str:
        return self.case.method

    @property
    def module(self):
        return refimpl.get(self.case.method)

    @property
    def params(self) -> dict:
        """The parameters as the layer stores them (float32 adapters round the drawn float64 values)."""
        return self.layer.reference_params()

    def tokens(self, width: int) -> tuple[torch.Tensor, np.ndarray]:
        """Standard-normal activations (batch..., width) in the base dtype, and their exact float64 values."""
        t = torch.as_tensor(self.case.tokens(self.batch, width)).to(DTYPES[self.dtype])
        return t, t.double().numpy()

    def term_magnitudes(self) -> np.ndarray:
        """|W| + |ΔW|⁺, (d_out, d_in): the base and the adapter branch are summed separately."""
        return np.abs(self.W) + delta_terms(self.method, self.W, self.params, self.case.cfg)

    def weight_scale(self) -> float:
        """max (|W| + |ΔW|⁺): the scale of ΔW, of the merged and of the unmerged weight."""
        return float(self.term_magnitudes().max())

    def gradient_tolerances(self, x: np.ndarray, gy: np.ndarray) -> dict[str, float]:
        """Tolerance of each trainable parameter's gradient (float32 or float64 adapter arithmetic, see module docstring)."""
        rtol = ADAPTER_RTOL[self.dtype]
        scales = gradient_terms(self.method, x, self.W, self.params, self.case.cfg, gy)
        return {name: rtol * scale for name, scale in scales.items()}

    def _tolerance(self, terms: np.ndarray, length: int) -> float:
        scale = float(terms.max(initial=0.0))
        tolerance = ADAPTER_RTOL[self.dtype] * scale
        if self.dtype in LOW_PRECISION:
            tolerance += (length + 2) * UNIT_ROUNDOFF[self.dtype] * scale
        return tolerance

    def output_tolerance(self, x: np.ndarray) -> float:
        """Tolerance of y = x Wᵀ + x ΔWᵀ + b; scale max_t Σ_i |x_ti| (|W_oi| + |ΔW_oi|) + |b_o|."""
        terms = np.abs(x.reshape(-1, x.shape[-1])) @ self.term_magnitudes().T  # (T, d_out)
        if self.bias is not None:
            terms = terms + np.abs(self.bias)
        return self._tolerance(terms, x.shape[-1])

    def input_grad_tolerance(self, gy: np.ndarray) -> float:
        """Tolerance of gx = gy W + gy ΔW; scale max_t Σ_o |gy_to| (|W_oi| + |ΔW_oi|)."""
        terms = np.abs(gy.reshape(-1, gy.shape[-1])) @ self.term_magnitudes()  # (T, d_in)
        return self._tolerance(terms, gy.shape[-1])


def build_layer(case: Case, dtype: str, conv1d: bool, with_bias: bool) -> tuple[pt.AdaptedLayer, np.ndarray, np.ndarray | None]:
    """Wrap a base layer holding case.W (rounded to `dtype`) with the case's parameters."""
    d_out, d_in = case.W.shape
    torch_dtype = DTYPES[dtype]
    W = torch.as_tensor(case.W).to(torch_dtype)  # (d_out, d_in)
    bias = torch.as_tensor(case.rng.standard_normal(d_out)).to(torch_dtype) if (with_bias or conv1d) else None
    if conv1d:
        base = Conv1D(d_out, d_in).to(torch_dtype)  # stores Wᵀ (d_in, d_out); always has a bias
        with torch.no_grad():
            base.weight.copy_(W.T)
            base.bias.copy_(bias)
    else:
        base = torch.nn.Linear(d_in, d_out, bias=bias is not None, dtype=torch_dtype)
        with torch.no_grad():
            base.weight.copy_(W)
            if bias is not None:
                base.bias.copy_(bias)
    layer = pt.wrap(base, case.method, case.cfg, case.params)
    return layer, W.double().numpy(), None if bias is None else bias.double().numpy()


@st.composite
def torch_cases(draw, method: str, dtypes: tuple[str, ...] = tuple(DTYPES)) -> TorchCase:
    case = draw(cases(method))
    dtype = draw(st.sampled_from(dtypes))
    conv1d, with_bias = draw(st.booleans()), draw(st.booleans())
    layer, W, bias = build_layer(case, dtype, conv1d, with_bias)
    return TorchCase(case, dtype, conv1d, layer, W, bias, draw(batch_shapes))


def _absolute(method: str, params: dict, cfg) -> tuple[dict, object]:
    """Parameters and config with every factor made non-negative (SVD re-scaling: σ⁰ negated, so that the two products
    of ΔW = (b U s − U σ⁰) Vᵀ add up instead of cancelling)."""
    out = {name: (value if name == "indices" else np.abs(value)) for name, value in params.items()}
    if method == "svd_rescale":
        out["sigma0"] = -out["sigma0"]
    if method == "lora":
        cfg = dataclasses.replace(cfg, alpha=abs(cfg.alpha))
    if method == "dcft":
        cfg = dataclasses.replace(cfg, scaling=abs(cfg.scaling))
    return out, cfg


def _spectral_factor(method: str, shape: tuple[int, int]) -> float:
    """max |φ_u(o) φ_v(i)| of the basis: 1/(MN) for numpy's ifft2, 2/√(MN) for the orthonormal DCT."""
    M, N = shape
    return 1.0 / (M * N) if method == "fourierft" else 2.0 / math.sqrt(M * N)


def delta_terms(method: str, W: np.ndarray, params: dict, cfg) -> np.ndarray:
    """|ΔW|⁺ (d_out, d_in): entrywise sum of the magnitudes of the terms that make ΔW."""
    if method in ("fourierft", "sdctft"):
        return np.full(W.shape, abs(cfg.alpha) * np.abs(params["spectrum"]).sum() * _spectral_factor(method, W.shape))
    absolute, cfg = _absolute(method, params, cfg)
    return refimpl.get(method).delta_weight(np.abs(W), absolute, cfg)


def gradient_terms(method: str, x: np.ndarray, W: np.ndarray, params: dict, cfg, gy: np.ndarray) -> dict[str, float]:
    """Per trainable parameter: the largest entrywise sum of term magnitudes in its gradient."""
    x2, gy2 = np.abs(x.reshape(-1, x.shape[-1])), np.abs(gy.reshape(-1, gy.shape[-1]))
    if method in ("fourierft", "sdctft"):  # |A(a)[k]| ≤ ‖a‖₁ · max|φ|, per token
        per_token = x2.sum(axis=1) * gy2.sum(axis=1)
        return {"spectrum": abs(cfg.alpha) * float(per_token.sum()) * _spectral_factor(method, W.shape)}
    absolute, cfg = _absolute(method, params, cfg)
    _, grads = refimpl.get(method).vjp(x2, np.abs(W), absolute, cfg, gy2)
    return {name: float(np.abs(grad).max(initial=0.0)) for name, grad in grads.items()}


def assert_within(actual, expected, tolerance: float, what: str) -> None:
    """max |actual − expected| ≤ tolerance, naming the compared quantity."""
    actual = actual.detach().double().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= tolerance, f"{what}: max |torch − reference| = {error:.3g} > tolerance {tolerance:.3g}"
