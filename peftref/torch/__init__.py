r"""peftref.torch: the accelerated PyTorch path, proven equal to :mod:`peftref.refimpl` by tests/torch.

>>> import torch
>>> from peftref import refimpl
>>> import peftref.torch as pt
>>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
>>> model = pt.inject(model, "lora", refimpl.get("lora").Config(r=2), ["0", "2"], rng=0)
>>> [name for name, _ in pt.adapted_layers(model)]
['0', '2']

One ``nn.Module`` per method wraps an ``nn.Linear`` or a GPT-2 ``Conv1D`` and computes the method's *efficient* form
(factored FourierFT and sDCTFT, chunk-sum Bone, Kronecker DCFT, factored SVD re-scaling, block-form Bat); trainable arrays
are plain ``nn.Parameter``s named as in SPEC.md, frozen arrays are buffers. Model-level helpers: :func:`inject`,
:func:`merge`, :func:`unmerge`, :func:`unload`, :func:`enable_adapters`, :func:`disable_adapters`, :func:`adapters_disabled`,
:func:`adapted_layers`; one layer: :func:`wrap`.
"""

from __future__ import annotations

from .bat import BatLayer
from .bone import BoneLayer
from .dcft import DCFTLayer
from .fourierft import FourierFTLayer
from .layer import AdaptedLayer, AdditiveLayer
from .lora import LoRALayer
from .model import (
    LAYERS,
    adapted_layers,
    adapters_disabled,
    disable_adapters,
    enable_adapters,
    inject,
    layer_class,
    merge,
    unload,
    unmerge,
    wrap,
)
from .sdctft import SDCTFTLayer
from .svd_rescale import SVDRescaleLayer

__all__ = [
    "LAYERS",
    "AdaptedLayer",
    "AdditiveLayer",
    "BatLayer",
    "BoneLayer",
    "DCFTLayer",
    "FourierFTLayer",
    "LoRALayer",
    "SDCTFTLayer",
    "SVDRescaleLayer",
    "adapted_layers",
    "adapters_disabled",
    "disable_adapters",
    "enable_adapters",
    "inject",
    "layer_class",
    "merge",
    "unload",
    "unmerge",
    "wrap",
]
