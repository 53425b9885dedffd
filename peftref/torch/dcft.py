r"""DCFT in torch: ΔW = scaling · conv_transpose2d(B A, Cᵀ, stride) (see :mod:`peftref.refimpl.dcft`).

Efficient forward, per token, with K = Cᵀ and the windows X̃[b, q] = x[stride·b + q] (n_in × d):

    Y = scaling · B (A X̃) Kᵀ = scaling · B (A X̃) C        (n_out × d)
    y[stride·a + p] += Y[a, p]                              (overlap-add)

With stride = d (the default) the windows tile x exactly: X̃ is a reshape of x, the overlap-add a reshape of Y, and
ΔW = scaling · kron(B A, Cᵀ) — the Kronecker form. With stride < d the windows overlap (``Tensor.unfold``) and the
overlap-add is ``F.fold``, the adjoint of unfold. Cost k·d (n_in + d + n_out) per token, no d_out × d_in product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .layer import AdditiveLayer


class DCFTLayer(AdditiveLayer):
    """Trainable A (k, n_in), B (n_out, k), C (d, d)."""

    method = "dcft"

    def delta_forward(self, x, p):
        d, stride = self.config.d, self.config.stride
        X = x.unfold(-1, d, stride)  # (T, n_in, d): windows of x
        Z = torch.einsum("kb,tbq->tkq", p["A"], X) @ p["C"]  # (T, k, d): (A X̃) Kᵀ with K = Cᵀ
        Y = torch.einsum("ak,tkp->tap", p["B"], Z)  # (T, n_out, d)
        return self.config.scaling * self._overlap_add(Y)  # (T, d_out)

    def _overlap_add(self, Y: torch.Tensor) -> torch.Tensor:
        """(T, n_out, d) -> (T, d_out): out[t, stride·a + p] += Y[t, a, p]."""
        T, n_out, d = Y.shape
        if self.config.stride == d:
            return Y.reshape(T, n_out * d)
        d_out, stride = self.shape[0], self.config.stride
        out = F.fold(Y.transpose(1, 2), output_size=(1, d_out), kernel_size=(1, d), stride=(1, stride))  # (T, 1, 1, d_out)
        return out.reshape(T, d_out)

    def delta_matrix(self, p):
        P = p["B"] @ p["A"]  # (n_out, k) @ (k, n_in) -> (n_out, n_in)
        K = p["C"].T  # (d, d): the original's kernel, transposed into our layout
        if self.config.stride == self.config.d:
            kron = P[:, None, :, None] * K[None, :, None, :]  # (n_out, d, n_in, d): [a, p, b, q] = P[a, b] K[p, q]
            return self.config.scaling * kron.reshape(self.shape)  # kron(P, K), (d_out, d_in)
        conv = F.conv_transpose2d(P[None, None], K[None, None], stride=self.config.stride)  # (1, 1, d_out, d_in)
        return self.config.scaling * conv[0, 0]
