"""Hypothesis strategies shared by the refimpl tests, and the papers' trainable-parameter counts.

``cases(method)`` draws one adapted layer: a valid shape for the method (every side ≤ MAX_DIM), a valid config, a base weight W
and parameters from ``init`` whose trainable arrays are replaced by random values (a stand-in for training). Array values come
from a NumPy generator seeded by Hypothesis, so every example is reproducible from its seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from hypothesis import strategies as st

from peftref import refimpl
from peftref.refimpl import bat, bone, dcft, fourierft, lora, sdctft, svd_rescale

MAX_DIM = 24
#: methods whose init gives ΔW = 0 (FourierFT and sDCTFT with init="zeros"; DCFT inits all three factors to N(0, 0.02²)).
ZERO_INIT = ("lora", "fourierft", "sdctft", "bone", "bat", "svd_rescale")

dims = st.integers(1, MAX_DIM)
scales = st.builds(lambda magnitude, sign: sign * magnitude, st.floats(0.25, 4.0), st.sampled_from([-1.0, 1.0]))
seeds = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Case:
    """One adapted layer: method, config, base weight W (d_out, d_in) and a full parameter dict."""

    method: str
    cfg: object
    W: np.ndarray
    params: dict
    rng: np.random.Generator  # for further draws in the test (x, gy, directions)

    @property
    def module(self) -> ModuleType:
        return refimpl.get(self.method)

    @property
    def shape(self) -> tuple[int, int]:
        return self.W.shape

    def tokens(self, batch: tuple, width: int) -> np.ndarray:
        """Standard-normal activations of shape batch + (width,)."""
        return self.rng.standard_normal(tuple(batch) + (width,))


@st.composite
def _lora(draw):
    cfg = lora.Config(r=draw(st.integers(1, 8)), alpha=draw(scales), use_rslora=draw(st.booleans()))
    return cfg, (draw(dims), draw(dims))


@st.composite
def _fourierft(draw):
    d_out, d_in = draw(dims), draw(dims)
    n = draw(st.integers(1, min(d_out * d_in, 48)))
    seed = draw(st.integers(-(2**40), 2**40))
    cfg = fourierft.Config(n=n, alpha=draw(scales), seed=seed, init=draw(st.sampled_from(["normal", "zeros"])))
    return cfg, (d_out, d_in)


@st.composite
def _sdctft(draw):
    d_out, d_in = draw(dims), draw(dims)
    cfg = sdctft.Config(
        n=draw(st.integers(1, min(d_out * d_in, 48))),
        alpha=draw(scales),
        seed=draw(seeds),
        energy_fraction=draw(st.floats(0.0, 1.0)),
        bands=draw(st.integers(1, 4)),
        init=draw(st.sampled_from(["zeros", "normal"])),
    )
    return cfg, (d_out, d_in)


@st.composite
def _dcft(draw):
    d = draw(st.integers(1, 4))
    stride = draw(st.integers(1, d + 2))  # stride < d overlaps, = d tiles (Kronecker), > d leaves gaps
    most = (MAX_DIM - d) // stride + 1
    n_out, n_in = draw(st.integers(1, most)), draw(st.integers(1, most))
    cfg = dcft.Config(d=d, stride=stride, k=draw(st.integers(1, 3)), scaling=draw(scales))
    return cfg, (d + stride * (n_out - 1), d + stride * (n_in - 1))


@st.composite
def _bone(draw):
    d_out, d_in = draw(dims), draw(dims)
    divisors = [m for m in range(1, d_out + 1) if d_out % m == 0]
    mini_r = draw(st.sampled_from([None, *divisors]))
    return bone.Config(r=draw(st.integers(1, d_in)), mini_r=mini_r), (d_out, d_in)


@st.composite
def _bat(draw):
    r = draw(st.integers(1, 6))
    blocks = st.integers(1, min(4, MAX_DIM // r))
    return bat.Config(r=r), (r * draw(blocks), r * draw(blocks))


@st.composite
def _svd_rescale(draw):
    d_out, d_in = draw(dims), draw(dims)
    return svd_rescale.Config(r=draw(st.integers(1, min(d_out, d_in)))), (d_out, d_in)


#: method -> strategy of (cfg, (d_out, d_in)), every pair valid for the method.
CONFIGS = {
    "lora": _lora(),
    "fourierft": _fourierft(),
    "sdctft": _sdctft(),
    "dcft": _dcft(),
    "bone": _bone(),
    "bat": _bat(),
    "svd_rescale": _svd_rescale(),
}
assert tuple(CONFIGS) == refimpl.METHODS


def trained(method: str, params: dict, rng: np.random.Generator) -> dict:
    """The trainable arrays replaced by random values. Bat's blocks stay below 0.5/r entrywise, so ‖B_i‖₂ ≤ ‖B_i‖_F ≤ 0.5
    and I + B_i has condition number ≤ 3: unmerge is well-conditioned."""
    out = dict(params)
    for name in refimpl.get(method).TRAINABLE:
        shape = params[name].shape
        if method == "bat":
            out[name] = rng.uniform(-0.5, 0.5, size=shape) / shape[-1]
        else:
            out[name] = rng.standard_normal(shape)
    return out


@st.composite
def cases(draw, method: str, train: bool = True, zero_init: bool = False) -> Case:
    """A Case for `method`; train=False keeps the init values, zero_init forces init="zeros" where the method has that option."""
    cfg, shape = draw(CONFIGS[method])
    if zero_init and hasattr(cfg, "init"):
        cfg = dataclasses.replace(cfg, init="zeros")
    rng = np.random.default_rng(draw(seeds))
    W = rng.standard_normal(shape)
    params = refimpl.get(method).init(W, cfg, rng)
    return Case(method, cfg, W, trained(method, params, rng) if train else params, rng)


batch_shapes = st.lists(st.integers(1, 3), max_size=2).map(tuple)  # leading dimensions of x, possibly none


def _dcft_count(cfg, d_out, d_in):
    n_out, n_in = (d_out - cfg.d) // cfg.stride + 1, (d_in - cfg.d) // cfg.stride + 1
    return cfg.k * (n_in + n_out) + cfg.d**2


#: method -> (cfg, d_out, d_in) -> the paper's trainable-parameter count for one layer.
PAPER_COUNT = {
    "lora": lambda cfg, d_out, d_in: cfg.r * (d_in + d_out),
    "fourierft": lambda cfg, d_out, d_in: cfg.n,
    "sdctft": lambda cfg, d_out, d_in: cfg.n,
    "dcft": _dcft_count,
    "bone": lambda cfg, d_out, d_in: cfg.r * (d_out if cfg.mini_r is None else cfg.mini_r),
    "bat": lambda cfg, d_out, d_in: cfg.r * d_out,
    "svd_rescale": lambda cfg, d_out, d_in: cfg.r + d_out,
}


def assert_close(actual, expected, rel: float, scale: float | None = None) -> None:
    """|actual − expected| ≤ rel · scale elementwise, scale = max(1, max |expected|) unless given."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if scale is None:
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= rel * scale, f"max |actual − expected| = {error:.3g} > {rel:.1g} · {scale:.3g}"
