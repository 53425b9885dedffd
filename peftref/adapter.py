"""The in-memory form of a fine-tuned adapter, shared by checkpoints, export, conformance and the torch path.

A checkpoint reader returns an :class:`Adapter`; the exporter folds one into an ONNX graph. Parameters always use SPEC.md's
names and our (d_out, d_in) layout; ``fan_in_fan_out`` only records that the *base* weight is stored transposed
(GPT-2 ``Conv1D``), which is handled where base weights are read or written, never in a method's math.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import refimpl


@dataclass(frozen=True)
class LayerAdapter:
    """One adapted linear layer: ``module`` is its path in the base model (e.g. ``encoder.layer.0.attention.self.query``)."""

    module: str
    method: str
    config: Any  # refimpl.get(method).Config
    params: dict[str, np.ndarray]
    shape: tuple[int, int]  # (d_out, d_in) of the base weight in torch.nn.Linear layout
    fan_in_fan_out: bool = False

    def delta_weight(self, W: np.ndarray | None = None) -> np.ndarray:
        """ΔW (d_out, d_in) float64. W (in (d_out, d_in) layout) is required by methods whose update depends on it (Bat)."""
        if W is None:
            if self.method == "bat":
                raise ValueError(f"{self.module}: bat's update depends on the base weight; pass W")
            W = np.zeros(self.shape)
        return refimpl.get(self.method).delta_weight(W, self.params, self.config)

    def merge(self, W: np.ndarray) -> np.ndarray:
        """W + ΔW(W) in float64, W in (d_out, d_in) layout."""
        return refimpl.get(self.method).merge(W, self.params, self.config)

    def num_trainable(self) -> int:
        return refimpl.get(self.method).num_trainable(self.shape, self.config)


@dataclass
class Adapter:
    """All adapted layers of one model, plus whole modules PEFT saves verbatim (``modules_to_save``)."""

    layers: dict[str, LayerAdapter]
    modules_to_save: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # module -> {"weight": ..., "bias": ...}
    peft_type: str | None = None  # "LORA", "FOURIERFT", "MISS", "BONE", or None for peftref's own format
    source: str = ""  # where it was read from, for error messages

    def num_trainable(self) -> int:
        return sum(layer.num_trainable() for layer in self.layers.values())
