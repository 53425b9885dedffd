r"""The orthonormal DCT-II and its inverse along the last axis, through one real FFT (Makhoul, IEEE TASSP 1980), evaluated
at chosen frequencies only — what sDCTFT needs: n coefficients in, n coefficients out.

torch has no DCT. For a length-N signal x, reorder it so that the even samples come first and the odd ones follow reversed,

    v = [x₀, x₂, x₄, …, x₅, x₃, x₁],        V = rfft(v)  (bins h = 0 … N//2)

With θ_h = πh/(2N) and the orthonormal scale a(0) = √(1/N), a(k > 0) = √(2/N), the DCT-II is a twiddle away:
X[k] = a(k) Re(V[k] e^{−iθ_k}), and since V[N − h] = conj V[h], every frequency reads one bin h = min(k, N − k):

    X[k] = a(k) (cos θ_h Re V[h] + sin θ_h Im V[h])        k ≤ N/2
    X[k] = a(k) (sin θ_h Re V[h] − cos θ_h Im V[h])        k > N/2

So ``dct_at`` gathers two columns per wanted frequency and weighs them: one rfft plus O(n) work per row.
The inverse (an orthonormal DCT-III) runs the steps backwards: a coefficient z at frequency k adds to bin h of V

    (z / a(k)) (cos θ_h + i sin θ_h)     if k ≤ N/2,        (z / a(k)) (sin θ_h − i cos θ_h)     if k ≥ N/2, k > 0

(both at k = N/2), then v = irfft(V) and the reordering is undone: ``idct_from`` scatters n coefficients, runs one irfft.
The full transforms are the same functions at every frequency. Against a dense N × N DCT matrix (N² per row) this is
N log N; benchmarks/bench_torch_step.py measures both (the FFT wins at the sizes that matter, see docs/torch.md).
"""

from __future__ import annotations

import math

import torch

from .spectral import take


def _reorder(N: int, device) -> torch.Tensor:
    """v = x[reorder]: the even indices, then the odd ones reversed."""
    j = torch.arange(N, device=device)
    half = (N + 1) // 2
    return torch.where(j < half, 2 * j, 2 * (N - 1 - j) + 1)


def _undo_reorder(N: int, device) -> torch.Tensor:
    """x = v[undo]: x[2m] = v[m], x[2m + 1] = v[N − 1 − m]."""
    i = torch.arange(N, device=device)
    return torch.where(i % 2 == 0, i // 2, N - 1 - i // 2)


def _bins(k: torch.Tensor, N: int, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For frequencies k: bin h = min(k, N − k), cos θ_h, sin θ_h, and a(k)."""
    h = torch.minimum(k, N - k)
    theta = h.to(dtype) * (math.pi / (2 * N))
    a = torch.full(k.shape, math.sqrt(2.0 / N), dtype=dtype, device=k.device)
    a[k == 0] = math.sqrt(1.0 / N)
    return h, torch.cos(theta), torch.sin(theta), a


def dct_at(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """dct(x, type=2, norm="ortho")[:, k] for real x (T, N) and frequencies k (n,) int64: (T, n)."""
    N = x.shape[-1]
    h, cos, sin, a = _bins(k, N, x.dtype)
    lower = k <= N - k
    weight_re, weight_im = a * torch.where(lower, cos, sin), a * torch.where(lower, sin, -cos)  # (n,) each
    V = torch.view_as_real(torch.fft.rfft(take(x, _reorder(N, x.device)), dim=-1)).flatten(1)  # (T, 2 (N//2 + 1))
    return torch.addcmul(take(V, 2 * h) * weight_re, take(V, 2 * h + 1), weight_im)  # (T, n)


def idct_from(z: torch.Tensor, k: torch.Tensor, N: int) -> torch.Tensor:
    """idct(Z, type=2, norm="ortho") for Z (T, N) zero but Z[:, k_j] += z[:, j], z (T, n), k (n,) int64: (T, N)."""
    h, cos, sin, a = _bins(k, N, z.dtype)
    direct = (k <= N - k).to(z.dtype)  # contributes through bin k
    mirror = ((k >= N - k) & (k > 0)).to(z.dtype)  # contributes through bin N − k
    weight_re, weight_im = (direct * cos + mirror * sin) / a, (direct * sin - mirror * cos) / a  # (n,) each
    V = torch.zeros(z.shape[0], 2 * (N // 2 + 1), dtype=z.dtype, device=z.device)  # (T, 2 (N//2 + 1)): Re, Im interleaved
    V.index_add_(1, 2 * h, z * weight_re).index_add_(1, 2 * h + 1, z * weight_im)
    v = torch.fft.irfft(torch.view_as_complex(V.view(z.shape[0], -1, 2)), n=N, dim=-1)  # (T, N)
    return take(v, _undo_reorder(N, z.device))


def dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last axis (scipy's ``dct(x, type=2, norm="ortho")``), x real (..., N)."""
    N = x.shape[-1]
    return dct_at(x.reshape(-1, N), torch.arange(N, device=x.device)).reshape(x.shape)


def idct(X: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct` (scipy's ``idct(X, type=2, norm="ortho")``, an orthonormal DCT-III), X real (..., N)."""
    N = X.shape[-1]
    return idct_from(X.reshape(-1, N), torch.arange(N, device=X.device), N).reshape(X.shape)
