r"""What FourierFT and sDCTFT share in torch: a sparse spectrum S (d_out × d_in, n entries c_k at (u_k, v_k)) applied to
activations through a pair of 1-D transforms, never forming ΔW — the torch twin of :mod:`peftref.refimpl._spectral`.

With an *analysis* A (applied to activations) and a *synthesis* Σ (turning a sparse spectrum back into space), gathered and
scattered at the n locations:

    forward      y  = α · Σ_M(scatter_u(c ⊙ A_N(x)[v]))            x ΔWᵀ, (T, d_in) -> (T, d_out)
    input grad   gx = α · Σ_N(scatter_v(c ⊙ A_M(gy)[u]))           gy ΔW, the same map with u and v exchanged
    spectrum     gc = α · Re Σ_tokens A_M(gy)[u] ⊙ A_N(x)[v]

Each transform is split into its bulk work and a per-frequency weight, A(a)[idx] = gather(a) ⊙ g and
Σ(z at idx) = scatter(z ⊙ s), so that all the scalings (g, c, s, α) fold into one length-n vector and touch the (T, n)
activations once. The backward is written out (a ``torch.autograd.Function``) rather than left to autograd: it reuses
gather_M(gy) for both gradients, and recomputes gather_N(x) from x instead of saving it — the layer keeps no activations
beyond its input (a saved (T, n) analysis would outweigh x itself once n > d_in / 2). A training step costs five
length-d FFTs per token and three gathers and two scatters of n values, nothing of size d_out × d_in.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class TransformPair(NamedTuple):
    """A transform pair on real signals. Complex values travel as real [Re, Im] column pairs (CPU complex arithmetic is
    several times slower than real arithmetic on the same numbers), so each value takes ``width = len(real_part)`` columns.

    gather(a, idx) -> (T, n·width): the raw analysed values of a (T, L) at frequencies idx (columns k·width …);
    scatter(z, idx, L) -> (T, L): the synthesis of Z (T, L), zero but Z[:, idx_k] += the value in z's columns k·width …;
    weights(idx, L, like) -> (g, s), each (n·width,): A(a)[idx] = gather(a) ⊙ g and Σ(z) = scatter(z ⊙ s);
    real_part (width,): Re(p q) = Σ_w real_part[w] p[w] q[w] for two analysed values p, q.
    """

    gather: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    scatter: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
    weights: Callable[[torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    real_part: tuple[float, ...]


def take(X: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """X[:, idx] for X (T, L), idx (m,) -> (T, m)."""
    return X.index_select(1, idx)


def pair_columns(h: torch.Tensor) -> torch.Tensor:
    """Columns [2h, 2h + 1] (Re, Im of bin h) in the (T, 2 (L//2 + 1)) real view of a half spectrum: (2n,)."""
    return torch.stack([2 * h, 2 * h + 1], dim=-1).flatten()


class SparseSpectralProduct(torch.autograd.Function):
    """x ΔWᵀ for the sparse-spectrum update ΔW = α Re(Σ_M S Σ_Nᵀ), with the backward of the module docstring."""

    @staticmethod
    def forward(ctx, x, spectrum, u, v, alpha: float, pair: TransformPair, shape: tuple[int, int]):
        M, N = shape
        g_N, _ = pair.weights(v, N, spectrum)  # (n·width,) each
        _, s_M = pair.weights(u, M, spectrum)
        c = spectrum.repeat_interleave(len(pair.real_part))  # (n·width,)
        ctx.save_for_backward(x, spectrum, u, v)  # x, not its (T, n·width) analysis: the caller holds x anyway
        ctx.alpha, ctx.pair, ctx.shape = alpha, pair, shape
        return pair.scatter(pair.gather(x, v).mul_(alpha * g_N * c * s_M), u, M)  # (T, n·width) -> (T, M)

    @staticmethod
    def backward(ctx, gy):
        x, spectrum, u, v = ctx.saved_tensors
        (M, N), pair, alpha = ctx.shape, ctx.pair, ctx.alpha
        g_M, _ = pair.weights(u, M, spectrum)
        g_N, s_N = pair.weights(v, N, spectrum)
        gathered_gy = pair.gather(gy, u)  # (T, n·width)
        gx = gc = None
        if ctx.needs_input_grad[1]:
            real_part = torch.tensor(pair.real_part, dtype=spectrum.dtype, device=spectrum.device)  # (width,)
            products = pair.gather(x, v).mul_(gathered_gy).sum(dim=0) * (alpha * g_M * g_N)  # (n·width,): Σ_t A_M(gy) A_N(x)
            gc = products.view(-1, len(pair.real_part)) @ real_part  # (n,): the real part
        if ctx.needs_input_grad[0]:
            c = spectrum.repeat_interleave(len(pair.real_part))
            gx = pair.scatter(gathered_gy.mul_(alpha * g_M * c * s_N), v, N)  # (T, N)
        return gx, gc, None, None, None, None, None


def sparse_spectral_product(x, spectrum, indices, alpha: float, pair: TransformPair, shape: tuple[int, int]) -> torch.Tensor:
    """x (T, d_in) -> x ΔWᵀ (T, d_out) for indices (2, n) = [u; v] and spectrum c (n,)."""
    u, v = indices
    return SparseSpectralProduct.apply(x, spectrum, u, v, alpha, pair, shape)
