r"""DCFT: deconvolution in subspace (Zhang et al., COLING 2025, arXiv 2503.01419; code github.com/Godz-z/DCFT).

A tiny low-rank matrix P = B A (n_out × n_in) is up-sampled to the full weight shape by a learned d × d kernel with a
transposed convolution (a "deconvolution"):

    ΔW = scaling · conv_transpose2d(B A, Cᵀ, stride)
    out[stride·a + p, stride·b + q] += (BA)[a, b] · Cᵀ[p, q]         (no kernel flip)
    n_in = (d_in − d)/stride + 1,   n_out = (d_out − d)/stride + 1    (whole numbers: the original has no padding rule)

With stride = d the kernel tiles do not overlap and ΔW = scaling · kron(B A, Cᵀ), i.e.
ΔW[o, i] = scaling · (BA)[o // d, i // d] · C[i mod d, o mod d] — the fast path.

Note the **Cᵀ**: the original code builds the update in the x·Δ layout (d_in × d_out) with kernel C; transposing the input and
the kernel of a transposed convolution transposes its output, so in our (d_out × d_in) layout the kernel is Cᵀ.
``kron(BA, C)`` is wrong for a trained, non-symmetric kernel. The original's merge adds the update without this transpose (a bug)
and it trains with an orthogonality regulariser; neither is part of this reference.

Efficient forward, per token, with K = Cᵀ and the windows X̃[b, q] = x[stride·b + q] (n_in × d, overlapping when stride < d):

    Y = scaling · B (A X̃) Kᵀ          (n_out × d),   then scatter:  y[stride·a + p] += Y[a, p]

The adjoint gathers windows of gy and scatters into x's positions in the same way with Bᵀ, Aᵀ, K. Gradients, with
G̃ the windows of gy and P = B A:  ∂L/∂P = scaling · Σ_t G̃ K X̃ᵀ,  ∂L/∂A = Bᵀ ∂L/∂P,  ∂L/∂B = ∂L/∂P Aᵀ,
∂L/∂C = (scaling · Σ_t G̃ᵀ P X̃)ᵀ.

Trainable: A (k, n_in), B (n_out, k), C (d, d); k (n_in + n_out) + d² parameters. Init: all N(0, 0.02²) (original), so ΔW ≠ 0.
``scaling`` is a plain factor; the original's ``alpha / (r + 1e-5)`` is :func:`original_scaling`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common

METHOD = "dcft"
TRAINABLE = ("A", "B", "C")
FROZEN = ()
INIT_STD = 0.02


@dataclass(frozen=True)
class Config:
    """d: kernel size; stride (default d); k: inner rank of B A; scaling: the factor in front of ΔW."""

    d: int = 8
    stride: int | None = None
    k: int = 1
    scaling: float = 1.0

    def __post_init__(self):
        _common.check_int(METHOD, "d", self.d)
        if self.stride is None:
            object.__setattr__(self, "stride", self.d)
        _common.check_int(METHOD, "stride", self.stride)
        _common.check_int(METHOD, "k", self.k)
        _common.check_real(METHOD, "scaling", self.scaling)


def original_scaling(alpha: float, r: float) -> float:
    """The original code's factor: alpha / (r + 1e-5)."""
    return alpha / (r + 1e-5)


def subspace_shape(shape, cfg: Config) -> tuple[int, int]:
    """(n_out, n_in) = ((d_out − d)/stride + 1, (d_in − d)/stride + 1); both must be whole numbers."""
    _common.check_config(METHOD, cfg, Config)
    d_out, d_in = _common.as_shape(METHOD, shape)
    sizes = []
    for name, dim in (("d_out", d_out), ("d_in", d_in)):
        if dim < cfg.d or (dim - cfg.d) % cfg.stride:
            raise _common.fail(
                METHOD,
                f"{name} = {dim} does not fit kernel d = {cfg.d} with stride {cfg.stride}: need {name} = d + stride·m "
                f"for a whole m >= 0 (the original has no padding rule)",
            )
        sizes.append((dim - cfg.d) // cfg.stride + 1)
    return sizes[0], sizes[1]


def param_shapes(shape, cfg: Config) -> dict[str, tuple]:
    """A (k, n_in), B (n_out, k), C (d, d)."""
    n_out, n_in = subspace_shape(shape, cfg)
    return {"A": (cfg.k, n_in), "B": (n_out, cfg.k), "C": (cfg.d, cfg.d)}


def num_trainable(shape, cfg: Config) -> int:
    """k (n_in + n_out) + d²."""
    n_out, n_in = subspace_shape(shape, cfg)
    return cfg.k * (n_in + n_out) + cfg.d**2


def init(W, cfg: Config, rng=None) -> dict[str, np.ndarray]:
    """A, B, C ~ N(0, 0.02²)."""
    shapes = param_shapes(_common.as_weight(METHOD, W).shape, cfg)
    rng = _common.as_generator(rng)
    return {name: rng.normal(0.0, INIT_STD, size=shape) for name, shape in shapes.items()}


def _validate(params, shape, cfg: Config) -> dict:
    return _common.check_params(METHOD, params, param_shapes(shape, cfg))


def conv_transpose(P: np.ndarray, K: np.ndarray, stride: int) -> np.ndarray:
    """out[stride·a + p, stride·b + q] += P[a, b] · K[p, q]: the transposed convolution, no kernel flip."""
    (n_rows, n_cols), d = P.shape, K.shape[0]
    out = np.zeros(((n_rows - 1) * stride + d, (n_cols - 1) * stride + d))
    for p in range(d):
        for q in range(d):
            out[p : p + stride * n_rows : stride, q : q + stride * n_cols : stride] += P * K[p, q]
    return out


def _dense_delta(p, shape, cfg: Config) -> np.ndarray:
    P = p["B"] @ p["A"]  # (n_out, k) @ (k, n_in) -> (n_out, n_in)
    K = p["C"].T  # (d, d): the original's kernel, transposed into our layout
    if cfg.stride == cfg.d:
        return cfg.scaling * np.kron(P, K)  # (n_out·d, n_in·d) = (d_out, d_in)
    return cfg.scaling * conv_transpose(P, K, cfg.stride)  # (d_out, d_in)


def _windows(a: np.ndarray, d: int, stride: int) -> np.ndarray:
    """(T, L) -> (T, m, d): a[t, stride·j + q] for the m = (L − d)/stride + 1 windows."""
    return np.lib.stride_tricks.sliding_window_view(a, d, axis=-1)[:, ::stride, :]


def _scatter(Y: np.ndarray, length: int, stride: int) -> np.ndarray:
    """(T, m, d) -> (T, length): out[t, stride·j + q] += Y[t, j, q]."""
    T, m, d = Y.shape
    out = np.zeros((T, length))
    for q in range(d):
        out[:, q : q + stride * m : stride] += Y[:, :, q]
    return out


def _delta_forward(x, p, cfg: Config, shape) -> np.ndarray:
    X = _windows(x, cfg.d, cfg.stride)  # (T, n_in, d)
    Z = np.einsum("kj,tjq->tkq", p["A"], X)  # (T, k, d)
    Y = np.einsum("ak,tkq,pq->tap", p["B"], Z, p["C"].T)  # (T, n_out, d): B Z Kᵀ with K = Cᵀ
    return cfg.scaling * _scatter(Y, shape[0], cfg.stride)  # (T, d_out)


def _delta_adjoint(gy, p, cfg: Config, shape) -> np.ndarray:
    G = _windows(gy, cfg.d, cfg.stride)  # (T, n_out, d)
    Z = np.einsum("ak,tap->tkp", p["B"], G)  # (T, k, d): Bᵀ G̃
    Y = np.einsum("kb,tkp,pq->tbq", p["A"], Z, p["C"].T)  # (T, n_in, d): Aᵀ Bᵀ G̃ K
    return cfg.scaling * _scatter(Y, shape[1], cfg.stride)  # (T, d_in)


def _grads(x, gy, p, cfg: Config, shape) -> dict:
    X = _windows(x, cfg.d, cfg.stride)  # (T, n_in, d)
    G = _windows(gy, cfg.d, cfg.stride)  # (T, n_out, d)
    K = p["C"].T  # (d, d)
    P = p["B"] @ p["A"]  # (n_out, n_in)
    dP = cfg.scaling * np.einsum("tap,pq,tbq->ab", G, K, X)  # (n_out, n_in): Σ_t G̃ K X̃ᵀ
    dK = cfg.scaling * np.einsum("tap,ab,tbq->pq", G, P, X)  # (d, d): Σ_t G̃ᵀ P X̃
    return {"A": p["B"].T @ dP, "B": dP @ p["A"].T, "C": dK.T}


_method = _common.AdditiveMethod(METHOD, Config, _validate, _dense_delta, _delta_forward, _delta_adjoint, _grads)


def delta_weight(W, params, cfg: Config) -> np.ndarray:
    """ΔW = scaling · conv_transpose2d(B A, Cᵀ, stride) (Kronecker product when stride = d). W gives only the shape."""
    return _method.delta_weight(W, params, cfg)


def merge(W, params, cfg: Config) -> np.ndarray:
    """W + ΔW."""
    return _method.merge(W, params, cfg)


def unmerge(W_merged, params, cfg: Config) -> np.ndarray:
    """W' − ΔW."""
    return _method.unmerge(W_merged, params, cfg)


def forward(x, W, params, cfg: Config, bias=None) -> np.ndarray:
    """y = x Wᵀ + b + scatter(scaling · B (A X̃) Kᵀ), never forming ΔW."""
    return _method.forward(x, W, params, cfg, bias)


def vjp(x, W, params, cfg: Config, gy):
    """(∂L/∂x, {"A", "B", "C"})."""
    return _method.vjp(x, W, params, cfg, gy)
