r"""FourierFT in torch: ΔW = α · Re(ifft2(F)), F[u_k, v_k] = c_k (see :mod:`peftref.refimpl.fourierft`).

The forward never forms ΔW (PEFT rebuilds the dense ΔW with an ifft2 and multiplies by it at every step). Per token,

    x ΔWᵀ = α · Re(ifft(z)),        z[u] = Σ_{k: u_k = u} c_k · ifft(x)[v_k]

through :mod:`peftref.torch.spectral` with analysis = synthesis = ``ifft``, both run on half spectra since the signals are real:

  - analysis: ifft(a)[j] = conj(X[j]) / L for j ≤ L/2 and X[L − j] / L above, with X = rfft(a) (…, L//2 + 1);
  - synthesis: Re(ifft(Z)) = irfft(H) with H[h] = (Z[h] + conj Z[−h mod L]) / 2 for h = 0 … L//2. A value z at frequency j
    lands in bin h = min(j, L − j) as z / 2 (0 < j < L/2), conj(z) / 2 (j > L/2), or Re z (j = 0 or L/2, where both
    halves meet): H[h] += a Re z + i b Im z with (a, b) = (½, ½), (½, −½) or (1, 0).

The conjugations, 1/L, (a, b), c_k and α are all per-frequency factors on [Re, Im] pairs, folded into one weight vector:
one rfft, one gather, one multiply, one scatter-add and one irfft per token and direction, O(L log L + n).

ΔW itself (merge, export) uses the 2-D form of the same identity: Re(ifft2(F)) = irfft2(H₂) with the real half-spectrum
H₂[u, v] = (F[u, v] + F[−u, −v]) / 2, v ≤ N//2 — half the work of PEFT's complex ifft2.
"""

from __future__ import annotations

import torch

from .layer import AdditiveLayer
from .spectral import TransformPair, pair_columns, sparse_spectral_product, take


def _bins(idx: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-spectrum bin min(j, L − j) of each frequency j, and whether j lies in the upper half (j > L/2)."""
    upper = idx > L - idx
    return torch.where(upper, L - idx, idx), upper


def half_spectrum_at(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """rfft(a) at bins min(j, L − j) for frequencies j = idx, a (T, L) real: (T, 2n), columns [Re, Im] per frequency."""
    X = torch.view_as_real(torch.fft.rfft(a, dim=-1)).flatten(1)  # (T, 2 (L//2 + 1)): Re, Im interleaved
    return take(X, pair_columns(_bins(idx, a.shape[-1])[0]))


def irfft_of_bins(z: torch.Tensor, idx: torch.Tensor, L: int) -> torch.Tensor:
    """irfft of the half spectrum H (T, L//2 + 1) built by H[min(j, L − j)] += z's [Re, Im] pair for j = idx: (T, L)."""
    H = torch.zeros(z.shape[0], 2 * (L // 2 + 1), dtype=z.dtype, device=z.device)  # (T, 2 (L//2 + 1))
    H.index_add_(1, pair_columns(_bins(idx, L)[0]), z)
    return torch.fft.irfft(torch.view_as_complex(H.view(z.shape[0], -1, 2)), n=L, dim=-1)  # (T, L), divides by L


def fourier_weights(idx: torch.Tensor, L: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The [Re, Im] weights of ifft(a)[j] = conj(X[j]) / L (j ≤ L/2) or X[L − j] / L, and of Re(ifft(Z)) = irfft(H):
    z at j lands as z / 2 (0 < j < L/2), conj(z) / 2 (j > L/2) or Re z (j = 0 or L/2). Each (2n,)."""
    _, upper = _bins(idx, L)
    edge = (idx == 0) | (2 * idx == L)
    one = torch.ones(idx.shape, dtype=like.dtype, device=like.device)
    g = torch.stack([one, torch.where(upper, one, -one)], dim=-1) / L  # (n, 2): conjugate below L/2
    s = torch.stack([torch.where(edge, one, one / 2), torch.where(edge, 0 * one, torch.where(upper, -one, one) / 2)], dim=-1)
    return g.flatten(), s.flatten()


FOURIER = TransformPair(gather=half_spectrum_at, scatter=irfft_of_bins, weights=fourier_weights, real_part=(1.0, -1.0))


class FourierFTLayer(AdditiveLayer):
    """Trainable spectrum (n,); frozen buffer indices (2, n) int64 (rows u, columns v)."""

    method = "fourierft"

    def delta_forward(self, x, p):
        return sparse_spectral_product(x, p["spectrum"], p["indices"], self.config.alpha, FOURIER, self.shape)

    def delta_matrix(self, p):
        M, N = self.shape
        u, v = p["indices"]
        c = p["spectrum"]
        # H₂[u, v] = (F[u, v] + F[−u, −v]) / 2 on columns v ≤ N//2; entries of the other half go to a spare column.
        rows = torch.cat([u, (-u) % M])  # (2n,)
        cols = torch.cat([v, (-v) % N])
        cols = torch.where(cols <= N // 2, cols, N // 2 + 1)
        H = torch.zeros(M, N // 2 + 2, dtype=c.dtype, device=c.device)  # (M, N//2 + 2)
        H = H.index_put((rows, cols), torch.cat([c, c]) / 2, accumulate=True)
        return self.config.alpha * torch.fft.irfft2(H[:, : N // 2 + 1], s=(M, N))  # a real H₂ is read as complex
