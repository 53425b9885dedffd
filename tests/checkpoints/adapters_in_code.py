"""Adapters built in code with the reference (torch-free), for writer round trips and the bad-input battery."""

from __future__ import annotations

import numpy as np

from peftref import refimpl
from peftref.adapter import Adapter, LayerAdapter
from peftref.demo import trained_params

#: module -> (d_out, d_in) of the tiny BERT in checkpoint_models (2 layers, hidden 32, intermediate 48).
BERT_SHAPES = {
    f"encoder.layer.{i}.{name}": shape
    for i in range(2)
    for name, shape in [
        ("attention.self.query", (32, 32)), ("attention.self.value", (32, 32)),
        ("intermediate.dense", (48, 32)), ("output.dense", (32, 48)),
    ]
}  # fmt: skip

#: method -> config fields valid for every BERT_SHAPES layer.
CONFIGS = {
    "lora": {"r": 4, "alpha": 8.0},
    "fourierft": {"n": 20, "alpha": 150.0, "seed": 777},
    "sdctft": {"n": 24, "alpha": 1.0, "seed": 3},
    "dcft": {"d": 4, "k": 2, "scaling": 0.5},
    "bone": {"r": 5},
    "bat": {"r": 4},
    "svd_rescale": {"r": 4},
}


def make_adapter(
    method: str,
    shapes: dict = BERT_SHAPES,
    fields: dict | None = None,
    seed: int = 0,
    dtype=np.float64,
    fan_in_fan_out: bool = False,
    per_module: dict | None = None,
) -> Adapter:
    """An adapter with random ("trained") parameters on every module of `shapes`; per_module {module: fields} overrides."""
    rng = np.random.default_rng(seed)
    layers = {}
    for module, shape in shapes.items():
        cfg = refimpl.make_config(method, {**(fields or CONFIGS[method]), **(per_module or {}).get(module, {})})
        W = rng.standard_normal(shape) / np.sqrt(shape[1])
        params = trained_params(method, W, cfg, rng)
        params = {k: v if k == "indices" else v.astype(dtype) for k, v in params.items()}
        layers[module] = LayerAdapter(module, method, cfg, params, shape, fan_in_fan_out)
    return Adapter(layers)
