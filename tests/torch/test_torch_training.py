"""Training with peftref.torch: Adam fits a reachable target update for every method; the layers work under torch.compile
(dynamo + AOTAutograd) and DistributedDataParallel; the DCT of peftref.torch.dct is scipy's; CUDA runs the same code
(skipped without a GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given
from hypothesis import strategies as st

import peftref.torch as pt
from peftref import refimpl
from peftref.torch.dct import dct, idct

#: per method: a config for a 16×16 layer (Adam's learning rate is 0.05 for all).
TRAINING = {
    "lora": {"r": 4, "alpha": 4.0},
    "fourierft": {"n": 48, "alpha": 150.0, "init": "zeros"},
    "sdctft": {"n": 48, "alpha": 1.0},
    "dcft": {"d": 4, "k": 2},
    "bone": {"r": 4},
    "bat": {"r": 4},
    "svd_rescale": {"r": 8},
}


def target_params(layer: pt.AdaptedLayer, rng: np.random.Generator) -> dict:
    """A reachable target: the layer's own parameters with random trainable values (Bat's blocks small: ‖B_i‖₂ < 1/2)."""
    params = layer.reference_params()
    for name in refimpl.get(layer.method).TRAINABLE:
        noise = rng.standard_normal(params[name].shape)
        params[name] = params[name] + (0.1 * noise if layer.method in ("bat", "bone", "svd_rescale") else noise)
    return params


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_adam_fits_a_target_update(method):
    config = TRAINING[method]
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    layer = pt.wrap(torch.nn.Linear(16, 16), method, config, rng=rng)
    reference = refimpl.get(method)
    W, bias = (t.detach().double().numpy() for t in (layer.weight_matrix(), layer.base_layer.bias))
    x = torch.randn(64, 16)
    target = reference.forward(x.double().numpy(), W, target_params(layer, rng), layer.config, bias=bias)
    target = torch.as_tensor(target, dtype=torch.float32)
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = torch.mean((layer(x) - target) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{method}: loss {losses[0]:.4g} -> {losses[-1]:.4g}"


def test_torch_compile_traces_the_custom_backward():
    """dynamo captures FourierFT's forward and its hand-written backward (AOTAutograd; the inductor C++ backend is left out:
    it takes minutes of CPU here). Same values, same gradients as eager."""
    torch._dynamo.reset()
    layer = pt.wrap(torch.nn.Linear(16, 12), "fourierft", {"n": 20}, rng=0)
    x = torch.randn(8, 16)
    eager = layer(x)
    eager.square().sum().backward()
    grad = layer.spectrum.grad.clone()
    layer.spectrum.grad = None
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    torch.testing.assert_close(y, eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.spectrum.grad, grad, rtol=1e-6, atol=1e-6)


def test_distributed_data_parallel_sees_plain_parameters(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
        model = pt.inject(net, "sdctft", {"n": 10, "init": "normal"}, ["0", "2"], rng=0)
        x = torch.randn(5, 8)
        model(x).sum().backward()
        expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        ddp = DistributedDataParallel(model)
        ddp(x).sum().backward()
        got = {name.removeprefix("module."): p.grad for name, p in ddp.named_parameters() if p.requires_grad}
        assert got.keys() == expected.keys() == {"0.spectrum", "2.spectrum"}
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad)
    finally:
        dist.destroy_process_group()


# --- the orthonormal DCT through the FFT -------------------------------------------------------------------------------


@given(n=st.integers(1, 70), rows=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_dct_and_idct_are_scipys_orthonormal_type_2(n, rows, seed):
    x = np.random.default_rng(seed).standard_normal((rows, n))
    # float64: a length-n FFT plus O(1) twiddles, error ~ log2(n) ulps of ‖x‖; 1e-12 absolute for unit-variance x, n ≤ 70
    np.testing.assert_allclose(dct(torch.as_tensor(x)).numpy(), scipy.fft.dct(x, type=2, norm="ortho"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(idct(torch.as_tensor(x)).numpy(), scipy.fft.idct(x, type=2, norm="ortho"), rtol=0, atol=1e-12)
    # float32: unit roundoff 6e-8 times the same growth; 1e-5 absolute
    x32 = torch.as_tensor(x, dtype=torch.float32)
    np.testing.assert_allclose(dct(x32).numpy(), scipy.fft.dct(x, type=2, norm="ortho"), rtol=0, atol=1e-5)


def test_dct_gradients():
    """dct and idct are differentiable (ΔW of sDCTFT is built with them): gradcheck against finite differences."""
    for n in (1, 2, 5, 8):
        x = torch.randn(2, n, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(dct, (x,)) and torch.autograd.gradcheck(idct, (x,))


def test_import_torch_inside_peftref_torch_is_the_real_torch():
    """peftref.torch and tests/torch are named torch; absolute imports still find PyTorch (no __init__.py in tests/torch)."""
    import peftref.torch.layer as layer_module

    assert layer_module.torch is torch and hasattr(torch, "nn") and Path(torch.__file__).parent.name == "torch"
    assert importlib.util.find_spec("torch").origin == torch.__file__
    assert not (Path(__file__).parent / "__init__.py").exists()


# --- CUDA ----------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("method", refimpl.METHODS)
def test_cuda_matches_cpu(method):
    """The same layer on cuda computes what it computes on the CPU (float32; cuFFT and cuBLAS round differently)."""
    config = TRAINING[method]
    torch.manual_seed(0)
    cpu = pt.wrap(torch.nn.Linear(16, 16), method, config, rng=0)
    cpu.load_reference_params(target_params(cpu, np.random.default_rng(1)))
    gpu = pt.wrap(torch.nn.Linear(16, 16), method, config, rng=0)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    assert all(t.device.type == "cuda" for t in gpu.state_dict().values())
    x = torch.randn(10, 16)
    y_cpu, y_gpu = cpu(x), gpu(x.cuda())
    y_cpu.square().sum().backward()
    y_gpu.square().sum().backward()
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-5, atol=1e-5)
    for name in refimpl.get(method).TRAINABLE:
        torch.testing.assert_close(getattr(gpu, name).grad.cpu(), getattr(cpu, name).grad, rtol=1e-4, atol=1e-5)
    gpu.merge()
    cpu.merge()
    torch.testing.assert_close(gpu.base_layer.weight.cpu(), cpu.base_layer.weight, rtol=1e-5, atol=1e-5)
