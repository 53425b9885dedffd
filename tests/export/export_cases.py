"""Shared builders for the export tests: fine-tuned-looking adapters, MLP bases, torch exports, reading outputs back.

Adapters get non-zero "trained" parameters (PEFT-style inits make ΔW = 0, which would hide every layout bug) and the
bases have non-symmetric weights, so writing W where the graph wants Wᵀ always changes the output.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from peftref import refimpl
from peftref.adapter import Adapter, LayerAdapter
from peftref.demo import trained_params

#: small configs valid for every layer of MLP_SHAPES (r and d divide 8, 16, 24).
CONFIGS = {
    "lora": {"r": 2, "alpha": 4.0},
    "fourierft": {"n": 24, "alpha": 60.0, "seed": 7},
    "sdctft": {"n": 24, "alpha": 1.0, "seed": 3},
    "dcft": {"d": 4, "k": 1, "scaling": 1.0},
    "bone": {"r": 4},
    "bat": {"r": 4},
    "svd_rescale": {"r": 4},
}
#: DCFT's ΔW is a product of three ~0.05-sized factors: scaled up so that its effect on the output is well above rounding.
SCALES = {"dcft": 4.0}
#: (d_out, d_in) of the MLP layers: non-square, then square (where only the graph can tell W from Wᵀ), then non-square.
MLP_SHAPES = [(16, 24), (16, 16), (8, 16)]


def layer_adapter(method: str, module: str, W: np.ndarray, rng, fan_in_fan_out: bool = False) -> LayerAdapter:
    """A LayerAdapter with trained-looking parameters for the base weight W (d_out, d_in)."""
    cfg = refimpl.make_config(method, CONFIGS[method])
    params = trained_params(method, W, cfg, rng)
    for name in refimpl.get(method).TRAINABLE:
        params[name] = params[name] * SCALES.get(method, 1.0)
    return LayerAdapter(module, method, cfg, params, W.shape, fan_in_fan_out)


def mlp_layers(seed: int = 0, shapes=MLP_SHAPES) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) / np.sqrt(shape[1]), 0.1 * rng.standard_normal(shape[0])) for shape in shapes]


def mlp_adapter(method: str, layers, seed: int = 1, modules=None) -> Adapter:
    rng = np.random.default_rng(seed)
    chosen = range(len(layers)) if modules is None else modules
    return Adapter({f"layers.{i}": layer_adapter(method, f"layers.{i}", layers[i][0], rng) for i in chosen}, source=f"test {method}")


def reference_mlp(x: np.ndarray, layers, adapter: Adapter, activation=np.tanh) -> np.ndarray:
    """The adapted MLP in float64 with the reference's efficient forward (never merged)."""
    h = np.asarray(x, np.float64)
    for i, (W, b) in enumerate(layers):
        layer = adapter.layers.get(f"layers.{i}")
        h = h @ W.T + b if layer is None else refimpl.get(layer.method).forward(h, W, layer.params, layer.config, bias=b)
        if i < len(layers) - 1:
            h = activation(h)
    return h


def save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    if external:
        onnx.save(model, path, save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, path)
    return path


def initializers(path: Path) -> dict[str, np.ndarray]:
    """Every initializer of a saved model (external data loaded) as NumPy arrays."""
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def run(path: Path, feeds: dict) -> list[np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def torch_export(model, args, path: Path, *, dynamo: bool, folded: bool, **kwargs) -> Path:
    """torch.onnx.export, quiet; `folded` is dynamo's optimize= or TorchScript's do_constant_folding=."""
    import torch

    options = {"optimize": folded} if dynamo else {"do_constant_folding": folded}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        torch.onnx.export(model, args, path, dynamo=dynamo, **options, **kwargs)
    return path


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))
