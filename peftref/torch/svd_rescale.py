r"""SVD re-scaling in torch: ΔW = (diag(b) U diag(s) − U diag(σ⁰)) Vᵀ (see :mod:`peftref.refimpl.svd_rescale`).

Efficient forward with z = x V (T, r): x ΔWᵀ = b ⊙ ((z ⊙ s) Uᵀ) − (z ⊙ σ⁰) Uᵀ, rearranged as

    x ΔWᵀ = (z ⊙ s) (diag(b − 1) U)ᵀ + (z ⊙ (s − σ⁰)) Uᵀ = [z ⊙ s, z ⊙ (s − σ⁰)] [diag(b − 1) U, U]ᵀ

one (T, 2r) @ (2r, d_out) product, a single pass over the d_out outputs per token (cost r (d_in + 2 d_out)); at init
(b = 1, s = σ⁰) every term is an exact zero, so an injected layer's output is bit-identical to the base layer's.
"""

from __future__ import annotations

import torch

from .layer import AdditiveLayer


class SVDRescaleLayer(AdditiveLayer):
    """Trainable s (r,), b (d_out,); frozen buffers U (d_out, r), V (d_in, r), sigma0 (r,)."""

    method = "svd_rescale"

    def delta_forward(self, x, p):
        z = x @ p["V"]  # (T, d_in) @ (d_in, r) -> (T, r)
        left = torch.cat([z * p["s"], z * (p["s"] - p["sigma0"])], dim=1)  # (T, 2r)
        right = torch.cat([(p["b"] - 1)[:, None] * p["U"], p["U"]], dim=1)  # (d_out, 2r)
        return left @ right.T  # (T, d_out)

    def delta_matrix(self, p):
        U = p["U"]  # (d_out, r)
        return ((p["b"][:, None] * U) * p["s"] - U * p["sigma0"]) @ p["V"].T  # (d_out, r) @ (r, d_in)
