r"""Bat (PEFT MiSS ``init_weights="bat"``) in torch: ΔW_ij = (W_ij + I) B_i on r × r blocks (see :mod:`peftref.refimpl.bat`).

The update depends on the frozen weight, so there is no W-free branch: the forward builds the adapted weight in block form,
one batched product over all blocks, and runs a single matrix product (PEFT's form, without its copy of W and its
separate W + ΔW pass):

    W_ij + ΔW_ij = W_ij (I + B_i) + B_i,        y = x (W + ΔW(W))ᵀ + b

in the adapter dtype (float32, or float64), the result cast back to the input's dtype. Dropout (PEFT ignores it for Bat)
applies to the input of the update only, as for every other method: while training with dropout p > 0 the forward is
y = base(x) + dropout(x) ΔW(W)ᵀ, two products instead of one; in eval mode it is the single product above.

unmerge solves W_ij (I + B_i) = W'_ij − B_i block by block in float64 and refuses a singular or ill-conditioned I + B_i
(2-norm condition number above :data:`peftref.refimpl.bat.MAX_CONDITION`), naming the block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..refimpl import bat as reference
from .layer import AdaptedLayer


def blocks(W: torch.Tensor, r: int) -> torch.Tensor:
    """(d_out, d_in) -> (d_out/r, d_in/r, r, r), [i, j] = W_ij."""
    d_out, d_in = W.shape
    return W.reshape(d_out // r, r, d_in // r, r).transpose(1, 2)


def unblocks(Wb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`blocks`."""
    n_out, n_in, r, _ = Wb.shape
    return Wb.transpose(1, 2).reshape(n_out * r, n_in * r)


def bat_delta(W: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """ΔW_ij = W_ij B_i + B_i for W (d_out, d_in), B (d_out/r, r, r)."""
    Wb = blocks(W, B.shape[-1])  # (n_out, n_in, r, r)
    return unblocks((Wb @ B[:, None]).add_(B[:, None]))  # B_i broadcast over the column blocks j


def bat_merged(W: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """W_ij + ΔW_ij = W_ij (I + B_i) + B_i in one batched product."""
    r = B.shape[-1]
    I_plus_B = torch.eye(r, dtype=B.dtype, device=B.device) + B  # (n_out, r, r)
    return unblocks((blocks(W, r) @ I_plus_B[:, None]).add_(B[:, None]))  # (d_out, d_in)


class BatLayer(AdaptedLayer):
    """Trainable B (d_out/r, r, r)."""

    method = "bat"

    def adapted_forward(self, x):
        dtype = self.adapter_dtype
        W, B = self.weight_matrix().to(dtype), self.tensors()["B"]  # (d_out, d_in) frozen, (n_out, r, r)
        if self.dropout_active:
            y = self.base_layer(x)
            return y + F.linear(self.dropout(x.to(dtype)), bat_delta(W, B)).to(y.dtype)
        bias = self.base_layer.bias
        return F.linear(x.to(dtype), bat_merged(W, B), None if bias is None else bias.to(dtype)).to(x.dtype)

    def merged_weight(self, W, p):
        return bat_merged(W, p["B"])

    def _invertible_blocks(self, B: torch.Tensor) -> torch.Tensor:
        """I + B_i (n_out, r, r) for float64 B, refused if some block is singular or ill-conditioned."""
        r = self.config.r
        I_plus_B = torch.eye(r, dtype=torch.float64, device=B.device) + B
        condition = torch.linalg.cond(I_plus_B)  # (n_out,)
        bad = torch.nonzero(~torch.isfinite(condition) | (condition > reference.MAX_CONDITION))
        if bad.numel():
            i = int(bad[0, 0])
            raise ValueError(
                f"bat: cannot unmerge: I + B[{i}] (output rows {i * r}..{(i + 1) * r - 1}) is singular or ill-conditioned "
                f"(condition number {float(condition[i]):.3g} > {reference.MAX_CONDITION:.0e})"
            )
        return I_plus_B

    def check_unmerge(self) -> None:
        super().check_unmerge()
        self._invertible_blocks(self.B.detach().to(torch.float64))

    def unmerged_weight(self, W_merged, p):
        B = p["B"].to(torch.float64)  # (n_out, r, r)
        I_plus_B = self._invertible_blocks(B)
        R = blocks(W_merged.to(torch.float64), self.config.r) - B[:, None]  # (n_out, n_in, r, r): W'_ij − B_i
        W_blocks = torch.linalg.solve(I_plus_B[:, None], R, left=False)  # X (I + B_i) = R
        return unblocks(W_blocks).to(W_merged.dtype)

    def delta_weight(self):
        p = self.tensors()
        W = self.weight_matrix().to(p["B"].dtype)
        if self.merged:
            with torch.no_grad():
                W = self.unmerged_weight(W, p)  # the base weight before merging
        return bat_delta(W, p["B"])
