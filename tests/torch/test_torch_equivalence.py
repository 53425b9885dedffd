"""peftref.torch computes the reference's function: forward, gradients (against refimpl.vjp), ΔW, merge and unmerge, for
every method, random shapes, configs, parameters, base dtypes (float64, float32, bf16, fp16) and layer types (nn.Linear and
GPT-2 Conv1D). Tolerances per dtype are defined and justified in torch_cases.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch_cases import ADAPTER_RTOL, LOW_PRECISION, UNIT_ROUNDOFF, assert_within, torch_cases

from peftref import refimpl


@pytest.mark.parametrize("method", refimpl.METHODS)
@given(data=st.data())
def test_forward_and_gradients_match_reference(method, data):
    tc = data.draw(torch_cases(method))
    layer, cfg, params = tc.layer, tc.case.cfg, tc.params
    d_out, d_in = layer.shape
    x, x64 = tc.tokens(d_in)
    gy, gy64 = tc.tokens(d_out)
    x.requires_grad_(True)

    y = layer(x)
    y.backward(gy)

    assert y.dtype == x.dtype and y.shape == tc.batch + (d_out,)
    assert_within(y, tc.module.forward(x64, tc.W, params, cfg, bias=tc.bias), tc.output_tolerance(x64), "forward")
    gx_ref, grads_ref = tc.module.vjp(x64, tc.W, params, cfg, gy64)
    assert_within(x.grad, gx_ref, tc.input_grad_tolerance(gy64), "∂L/∂x")
    # adapter parameter gradients see exact upcasts of x and gy, so float32 or float64 tolerances whatever the base dtype
    for name, tolerance in tc.gradient_tolerances(x64, gy64).items():
        assert_within(getattr(layer, name).grad, grads_ref[name], tolerance, f"∂L/∂{name}")
    assert layer.base_layer.weight.grad is None  # the base layer is frozen


@pytest.mark.parametrize("method", refimpl.METHODS)
@given(data=st.data())
def test_delta_weight_merge_and_unmerge_match_reference(method, data):
    tc = data.draw(torch_cases(method))
    layer, cfg, params, module = tc.layer, tc.case.cfg, tc.params, tc.module
    rtol, u = ADAPTER_RTOL[tc.dtype], UNIT_ROUNDOFF[tc.dtype]
    x, x64 = tc.tokens(layer.shape[1])

    scale = tc.weight_scale()
    delta_ref = module.delta_weight(tc.W, params, cfg)
    delta = layer.delta_weight()
    assert delta.dtype == (torch.float64 if tc.dtype == "float64" else torch.float32)
    assert_within(delta, delta_ref, rtol * scale, "ΔW")

    merged_ref = module.merge(tc.W, params, cfg)
    layer.merge()
    assert layer.merged and layer.base_layer.weight.dtype == x.dtype
    # one rounding to the base dtype after merging in float32/float64: u·max|W'| on top of the adapter arithmetic
    merge_tolerance = (rtol + u) * scale
    assert_within(layer.weight_matrix(), merged_ref, merge_tolerance, "merged W")
    with torch.no_grad():
        assert_within(layer(x), module.forward(x64, tc.W, params, cfg, bias=tc.bias), tc.output_tolerance(x64), "merged forward")
    if method != "bat" or tc.dtype not in LOW_PRECISION:  # Bat's ΔW depends on W, recovered from the rounded merged weight
        assert_within(layer.delta_weight(), delta_ref, rtol * scale, "ΔW of a merged layer")

    layer.unmerge()
    assert not layer.merged
    # unmerge rounds W' − ΔW once more; Bat solves X (I + B_i) = W'_ij − B_i, which amplifies the rounding of W' by
    # ‖(I + B_i)⁻¹‖₁ ≤ √r ‖(I + B_i)⁻¹‖₂ ≤ 2√r (the strategies keep ‖B_i‖₂ ≤ 1/2).
    amplification = 2 * math.sqrt(cfg.r) + 1 if method == "bat" else 1.0
    unmerge_tolerance = (rtol + (1 + amplification) * u) * scale
    assert_within(layer.weight_matrix(), tc.W, unmerge_tolerance, "unmerged W")


@pytest.mark.parametrize("method", refimpl.METHODS)
@given(data=st.data())
def test_delta_weight_is_differentiable(method, data):
    """∂/∂p Σ G ⊙ ΔW with G = Σ_t gyᵀ x equals the reference vjp's parameter gradients (the loss Σ gy · x ΔWᵀ)."""
    tc = data.draw(torch_cases(method, dtypes=("float64",)))
    layer, module = tc.layer, tc.module
    x, x64 = tc.tokens(layer.shape[1])
    gy, gy64 = tc.tokens(layer.shape[0])
    G = torch.as_tensor(gy64.reshape(-1, gy64.shape[-1]).T @ x64.reshape(-1, x64.shape[-1]))  # (d_out, d_in)
    (G * layer.delta_weight()).sum().backward()
    _, grads_ref = module.vjp(x64, tc.W, tc.params, tc.case.cfg, gy64)
    for name, tolerance in tc.gradient_tolerances(x64, gy64).items():
        assert_within(getattr(layer, name).grad, grads_ref[name], tolerance, f"∂/∂{name}")


@pytest.mark.parametrize("method", ["fourierft", "sdctft"])
@pytest.mark.parametrize("d_out, d_in", [(1, 1), (1, 5), (2, 3), (4, 4), (5, 2), (6, 7)])
def test_spectral_methods_on_every_frequency(method, d_out, d_in):
    """All d_out·d_in locations at once: every half-spectrum bin, including u = 0, u = M/2 and v = N/2, in float64."""
    module = refimpl.get(method)
    rng = np.random.default_rng(d_out * 10 + d_in)
    W = rng.standard_normal((d_out, d_in))
    cfg = module.Config(n=d_out * d_in, alpha=1.5)
    flat = rng.permutation(d_out * d_in)
    params = {"spectrum": rng.standard_normal(d_out * d_in), "indices": np.stack([flat // d_in, flat % d_in])}
    base = torch.nn.Linear(d_in, d_out, bias=False, dtype=torch.float64)
    with torch.no_grad():
        base.weight.copy_(torch.as_tensor(W))
    import peftref.torch as pt

    layer = pt.wrap(base, method, cfg, params)
    x64, gy64 = rng.standard_normal((3, d_in)), rng.standard_normal((3, d_out))
    x = torch.tensor(x64, requires_grad=True)
    layer(x).backward(torch.as_tensor(gy64))
    gx_ref, grads_ref = module.vjp(x64, W, params, cfg, gy64)
    assert_within(layer(x), module.forward(x64, W, params, cfg), 1e-12, "forward")
    assert_within(x.grad, gx_ref, 1e-12, "∂L/∂x")
    assert_within(layer.spectrum.grad, grads_ref["spectrum"], 1e-12, "∂L/∂spectrum")
    assert_within(layer.delta_weight(), module.delta_weight(W, params, cfg), 1e-12, "ΔW")
