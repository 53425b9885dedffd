"""The NumPy/SciPy reference of every method: one module per method, one API shape for all.

>>> from peftref import refimpl
>>> refimpl.METHODS
('lora', 'fourierft', 'sdctft', 'dcft', 'bone', 'bat', 'svd_rescale')
>>> m = refimpl.get("lora")
>>> m.num_trainable((64, 32), m.Config(r=4))
384

Each module has ``Config`` (a frozen, validated dataclass), ``init(W, cfg, rng)``, ``delta_weight(W, params, cfg)``,
``merge``, ``unmerge``, ``forward(x, W, params, cfg, bias)``, ``vjp(x, W, params, cfg, gy)``, ``num_trainable(shape, cfg)``,
``param_shapes(shape, cfg)`` and the tuples ``TRAINABLE`` / ``FROZEN`` of parameter names. Everything computes in float64.
Methods whose ΔW is a product of two thin factors (LoRA, SVD re-scaling) also have ``delta_factors(W, params, cfg)``, which
returns (L, R) with ΔW = L R; ``hasattr(module, "delta_factors")`` tells which.
"""

from __future__ import annotations

import importlib
from types import ModuleType

METHODS = ("lora", "fourierft", "sdctft", "dcft", "bone", "bat", "svd_rescale")


def get(method: str) -> ModuleType:
    """The reference module of a method id (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    return importlib.import_module(f"{__name__}.{method}")


def make_config(method: str, fields: dict):
    """``get(method).Config`` from a plain dict, naming unknown fields."""
    from ._common import config_from_dict

    return config_from_dict(get(method).Config, fields)
