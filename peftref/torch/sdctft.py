r"""sDCTFT in torch: ΔW = α · idctn(S, type=2, norm="ortho"), S[u_k, v_k] = c_k (see :mod:`peftref.refimpl.sdctft`).

The forward never forms ΔW. Per token, through :mod:`peftref.torch.spectral` with the orthonormal DCT of
:mod:`peftref.torch.dct` as analysis and its inverse as synthesis, each evaluated at the n frequencies only:

    x ΔWᵀ = α · idct(z),        z[u] = Σ_{k: u_k = u} c_k · dct(x)[v_k]

one rfft and a gather of n coefficients, a multiply, a scatter of n coefficients and one irfft per token and direction,
O(L log L + n).
The indices are selected once from the frozen weight by the reference's :func:`peftref.refimpl.sdctft.select_locations`.
"""

from __future__ import annotations

import torch

from .dct import dct_at, idct, idct_from
from .layer import AdditiveLayer
from .spectral import TransformPair, sparse_spectral_product


def unit_weights(idx: torch.Tensor, L: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dct_at and idct_from return the transforms' values themselves: no per-frequency weights, (1, 1)."""
    one = torch.ones(idx.shape, dtype=like.dtype, device=like.device)
    return one, one


COSINE = TransformPair(gather=dct_at, scatter=idct_from, weights=unit_weights, real_part=(1.0,))


class SDCTFTLayer(AdditiveLayer):
    """Trainable spectrum (n,); frozen buffer indices (2, n) int64 (rows u, columns v)."""

    method = "sdctft"

    def delta_forward(self, x, p):
        return sparse_spectral_product(x, p["spectrum"], p["indices"], self.config.alpha, COSINE, self.shape)

    def delta_matrix(self, p):
        u, v = p["indices"]
        c = p["spectrum"]
        S = torch.zeros(self.shape, dtype=c.dtype, device=c.device).index_put((u, v), c)  # (M, N)
        return self.config.alpha * idct(idct(S).T).T  # idct along the input axis, then along the output axis
