r"""LoRA in torch: ΔW = s · B A, forward ((x Aᵀ) · s) Bᵀ (see :mod:`peftref.refimpl.lora`).

The scale is applied to the (T, r) intermediate, not to the (T, d_out) output: one pass over r numbers per token instead of
d_out, forward and backward.
"""

from __future__ import annotations

from .layer import AdditiveLayer


class LoRALayer(AdditiveLayer):
    """Trainable A (r, d_in), B (d_out, r); s = alpha / r (alpha / √r with rsLoRA)."""

    method = "lora"

    def delta_forward(self, x, p):
        return ((x @ p["A"].T) * self.config.scaling) @ p["B"].T  # (T, d_in) -> (T, r) -> (T, d_out)

    def delta_matrix(self, p):
        return self.config.scaling * (p["B"] @ p["A"])  # (d_out, r) @ (r, d_in)
