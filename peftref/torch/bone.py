r"""Bone (PEFT MiSS default and mini) in torch: ΔW[o, i] = D[i mod r, o] (see :mod:`peftref.refimpl.bone`).

Efficient forward, the chunk sum: zero-pad x to a multiple of r, cut it into ⌈d_in/r⌉ chunks of width r and add them,
S (T, r); then x ΔWᵀ = S D. With mini, D (r, mini_r) is tiled along the output axis, so the product S D (T, mini_r)
is computed once and tiled: S tile(D) = tile(S D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layer import AdditiveLayer


class BoneLayer(AdditiveLayer):
    """Trainable D (r, d_out), or (r, mini_r) for mini."""

    method = "bone"

    def delta_forward(self, x, p):
        T, d_in = x.shape
        r, tiles = self.config.r, self.shape[0] // p["D"].shape[1]
        if d_in % r:
            x = F.pad(x, (0, -d_in % r))  # (T, ⌈d_in/r⌉·r)
        S = x.reshape(T, -1, r).sum(dim=1)  # (T, ⌈d_in/r⌉, r) -> (T, r)
        return (S @ p["D"]).repeat(1, tiles)  # (T, width) -> (T, d_out)

    def delta_matrix(self, p):
        d_out, d_in = self.shape
        D = p["D"].repeat(1, d_out // p["D"].shape[1])  # (r, d_out)
        columns = torch.arange(d_in, device=D.device) % self.config.r  # (d_in,): the row of D each input column uses
        return D.T[:, columns]  # (d_out, r) -> (d_out, d_in)
