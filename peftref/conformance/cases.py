"""The conformance cases: what each vector holds, the table of shapes and configs, and how a case is built from the reference.

Three kinds of case:

- ``valid``: a layer (W, bias), activations x (with leading batch dimensions), an upstream gradient gy and parameters;
  expected ΔW, forward (without and with bias), merge, vjp (∂L/∂x and every trainable gradient) and ``num_trainable``,
  all from the reference in float64. The unmerge check feeds the expected merged weight back and expects W.
- ``invalid``: inputs a conforming implementation must reject with ``ValueError`` in each operation listed in ``ops``.
- ``locations``: FourierFT's PEFT locations for (seed, d_out, d_in, n), compared exactly.

Every array is drawn from ``numpy.random.default_rng(crc32(case id))``, so a case's data depends on nothing but its id and spec.
Trainable parameters are scaled so that ΔW is of the order of W (entries ~ 1): a convention error then moves every output by a
relative O(1), far outside the tolerance, and unmerge (W' − ΔW) loses no precision to cancellation.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import refimpl
from ..refimpl import fourierft
from .tolerance import magnitude_scales, tolerance

#: The operations checked on every valid case.
VALID_OPS = ("delta_weight", "forward", "merge", "unmerge", "vjp", "num_trainable")
#: The operations that take parameters: an invalid parameter must be rejected by each.
PARAM_OPS = ("delta_weight", "forward", "merge", "unmerge", "vjp")


@dataclass
class Case:
    """One conformance case, as stored in the vectors (see the module docstring for the kinds)."""

    id: str  # "<method>/<name>"
    kind: str  # "valid" | "invalid" | "locations"
    method: str
    config: dict  # the Config fields as a plain dict; for locations {"seed", "n"}
    shape: tuple[int, int]  # (d_out, d_in)
    ops: tuple[str, ...]
    batch: tuple[int, ...] = ()  # leading dimensions of x and gy
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # W, x, gy, bias
    params: dict[str, np.ndarray] = field(default_factory=dict)
    expected: dict[str, np.ndarray] = field(default_factory=dict)  # delta_weight, forward, forward_bias, merge, gx, grad/<p>, indices
    num_trainable: int | None = None
    tolerance: dict | None = None  # tolerance.tolerance(...) for valid cases
    scales: dict = field(default_factory=dict)  # valid cases: output name -> tolerance.magnitude_scales(...)
    flags: dict = field(default_factory=dict)
    reason: str = ""  # invalid cases: what is wrong


def case_rng(case_id: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(case_id.encode()))


def full_config(method: str, fields: dict) -> dict:
    """Every Config field: the validated dataclass as a dict, or (for a config the method must reject) defaults + fields."""
    config_type = refimpl.get(method).Config
    try:
        return dataclasses.asdict(refimpl.make_config(method, fields))
    except (ValueError, TypeError):
        return {f.name: f.default for f in dataclasses.fields(config_type)} | dict(fields)


# Trainable values, per method, with |ΔW| of the order of |W| ~ 1 (frozen arrays come from refimpl's init).
def _lora(p, shape, cfg, rng):  # ΔW = s B A ~ s √r σ_A σ_B
    return {"A": rng.standard_normal(p["A"].shape), "B": rng.standard_normal(p["B"].shape) / (cfg.scaling * math.sqrt(cfg.r))}


def _fourierft(p, shape, cfg, rng):  # ΔW ~ α √n σ_c / (M N)
    return {"spectrum": rng.standard_normal(cfg.n) * shape[0] * shape[1] / (cfg.alpha * math.sqrt(cfg.n))}


def _sdctft(p, shape, cfg, rng):  # orthonormal basis: ΔW ~ α √(n / (M N)) σ_c
    return {"spectrum": rng.standard_normal(cfg.n) * math.sqrt(shape[0] * shape[1] / cfg.n) / cfg.alpha}


def _dcft(p, shape, cfg, rng):  # ΔW ~ scaling √k σ_A σ_B σ_C
    A, B = rng.standard_normal(p["A"].shape), rng.standard_normal(p["B"].shape)
    return {"A": A, "B": B, "C": rng.standard_normal(p["C"].shape) / (cfg.scaling * math.sqrt(cfg.k))}


def _bone(p, shape, cfg, rng):
    return {"D": rng.standard_normal(p["D"].shape)}


def _bat(p, shape, cfg, rng):  # ‖B_i‖₂ ≲ 1: I + B_i stays well conditioned for unmerge
    return {"B": rng.standard_normal(p["B"].shape) * 0.5 / math.sqrt(cfg.r)}


def _svd_rescale(p, shape, cfg, rng):
    return {"s": p["sigma0"] * (1 + 0.5 * rng.standard_normal(cfg.r)), "b": 1 + 0.5 * rng.standard_normal(shape[0])}


TRAINED = {"lora": _lora, "fourierft": _fourierft, "sdctft": _sdctft, "dcft": _dcft, "bone": _bone, "bat": _bat, "svd_rescale": _svd_rescale}


def trained_params(method: str, W: np.ndarray, cfg, rng: np.random.Generator, random_indices: bool = False) -> dict:
    """refimpl's init (frozen arrays: locations, SVD factors), then trainable values as if trained."""
    params = refimpl.get(method).init(W, cfg, rng)
    if random_indices:  # distinct, in random order: not PEFT's locations
        M, N = W.shape
        flat = rng.choice(M * N, size=cfg.n, replace=False)  # (n,)
        params["indices"] = np.stack([flat // N, flat % N])  # (2, n)
    return params | TRAINED[method](params, W.shape, cfg, rng)


def _condition(method: str, params: dict, cfg) -> float:
    """κ of the tolerance: the largest condition number of I + B_i for bat (its unmerge solves with it), else 1."""
    if method != "bat":
        return 1.0
    return max(float(np.linalg.cond(np.eye(cfg.r) + block)) for block in params["B"])


@dataclass(frozen=True)
class ValidSpec:
    name: str
    method: str
    shape: tuple[int, int]
    config: dict
    batch: tuple[int, ...] = (3,)
    random_indices: bool = False  # fourierft: random distinct indices instead of PEFT's locations

    @property
    def id(self) -> str:
        return f"{self.method}/{self.name}"


def build_valid(spec: ValidSpec, seed: int | None = None) -> Case:
    """A valid case with its expected outputs from the reference (float64)."""
    rng = case_rng(spec.id) if seed is None else np.random.default_rng(seed)
    module, cfg = refimpl.get(spec.method), refimpl.make_config(spec.method, spec.config)
    d_out, d_in = spec.shape
    W = rng.standard_normal(spec.shape)  # (d_out, d_in)
    x = rng.standard_normal(spec.batch + (d_in,))  # (..., d_in)
    gy = rng.standard_normal(spec.batch + (d_out,))  # (..., d_out)
    bias = rng.standard_normal(d_out)  # (d_out,)
    params = trained_params(spec.method, W, cfg, rng, spec.random_indices)
    gx, grads = module.vjp(x, W, params, cfg, gy)
    expected = {
        "delta_weight": module.delta_weight(W, params, cfg),
        "forward": module.forward(x, W, params, cfg),
        "forward_bias": module.forward(x, W, params, cfg, bias=bias),
        "merge": module.merge(W, params, cfg),
        "gx": gx,
    } | {f"grad/{name}": grad for name, grad in grads.items()}
    inputs = {"W": W, "x": x, "gy": gy, "bias": bias}
    flags = {}
    if spec.method == "fourierft":
        flags["peft_locations"] = bool(np.array_equal(params["indices"], fourierft.peft_locations(cfg.seed, d_out, d_in, cfg.n)))
    return Case(
        id=spec.id,
        kind="valid",
        method=spec.method,
        config=dataclasses.asdict(cfg),
        shape=spec.shape,
        ops=VALID_OPS,
        batch=spec.batch,
        inputs=inputs,
        params=params,
        expected=expected,
        num_trainable=module.num_trainable(spec.shape, cfg),
        tolerance=tolerance(spec.method, spec.shape, math.prod(spec.batch), _condition(spec.method, params, cfg)),
        scales=magnitude_scales(spec.method, inputs, params, cfg),
        flags=flags,
    )


Edit = Callable[[dict, np.random.Generator], None]


@dataclass(frozen=True)
class InvalidSpec:
    """Inputs to reject. Parameters: the trained ones when the config fits the shape, with ``shapes`` replacing some by random
    arrays of other shapes (all of them when the config does not fit the shape), then ``edit`` applied."""

    name: str
    method: str
    shape: tuple[int, int]
    config: dict
    reason: str
    ops: tuple[str, ...] = PARAM_OPS
    shapes: dict = field(default_factory=dict)
    edit: Edit | None = None

    @property
    def id(self) -> str:
        return f"{self.method}/invalid/{self.name}"


def build_invalid(spec: InvalidSpec) -> Case:
    rng = case_rng(spec.id)
    d_out, d_in = spec.shape
    W = rng.standard_normal(spec.shape)
    inputs = {"W": W, "x": rng.standard_normal((2, d_in)), "gy": rng.standard_normal((2, d_out)), "bias": rng.standard_normal(d_out)}
    try:
        cfg = refimpl.make_config(spec.method, spec.config)
        params = trained_params(spec.method, W, cfg, rng)
    except ValueError:
        params = {}  # the config does not fit the shape: `shapes` names every parameter
    params |= {name: rng.standard_normal(shape) for name, shape in spec.shapes.items()}
    if spec.edit is not None:
        spec.edit(params, rng)
    return Case(
        id=spec.id,
        kind="invalid",
        method=spec.method,
        config=full_config(spec.method, spec.config),
        shape=spec.shape,
        ops=spec.ops,
        batch=(2,),
        inputs=inputs,
        params=params,
        reason=spec.reason,
    )


@dataclass(frozen=True)
class LocationsSpec:
    name: str
    seed: int
    shape: tuple[int, int]
    n: int

    @property
    def id(self) -> str:
        return f"fourierft/locations/{self.name}"


def build_locations(spec: LocationsSpec) -> Case:
    d_out, d_in = spec.shape
    return Case(
        id=spec.id,
        kind="locations",
        method="fourierft",
        config={"seed": spec.seed, "n": spec.n},
        shape=spec.shape,
        ops=("locations",),
        expected={"indices": fourierft.peft_locations(spec.seed, d_out, d_in, spec.n)},
    )


def invalid_locations(name: str, seed: int, shape: tuple[int, int], n: int, reason: str) -> Case:
    return Case(id=f"fourierft/invalid/{name}", kind="invalid", method="fourierft", config={"seed": seed, "n": n},
                shape=shape, ops=("locations",), reason=reason)


# ---------------------------------------------------------------------------------------------------------------- the table
def _nan(name: str) -> Edit:
    def edit(params, rng):
        params[name] = params[name].astype(np.float64)
        params[name].flat[0] = np.nan

    return edit


def _set_index(row: int, k: int, value: int) -> Edit:
    def edit(params, rng):
        params["indices"][row, k] = value

    return edit


def _duplicate_index(params, rng):
    params["indices"][:, 1] = params["indices"][:, 0]


def _singular_block(params, rng):  # I + B_0 = 0
    params["B"][0] = -np.eye(params["B"].shape[-1])


VALID = [
    # LoRA: r = 1, r = d_in, r above both dimensions (allowed), rsLoRA, scalings ≠ 1.
    ValidSpec("square_8x8_r2", "lora", (8, 8), {"r": 2, "alpha": 6.0}, batch=(2, 3)),
    ValidSpec("tall_12x4_r4_eq_din", "lora", (12, 4), {"r": 4, "alpha": 2.0}, batch=(5,)),
    ValidSpec("wide_4x12_r1", "lora", (4, 12), {"r": 1, "alpha": 3.0}),
    ValidSpec("tiny_1x1_r1", "lora", (1, 1), {"r": 1, "alpha": 0.5}, batch=()),
    ValidSpec("tiny_1x5_r3_rslora", "lora", (1, 5), {"r": 3, "alpha": 4.0, "use_rslora": True}, batch=(2,)),
    ValidSpec("rank_above_dims_3x2_r5", "lora", (3, 2), {"r": 5, "alpha": 10.0}),
    ValidSpec("odd_7x9_r3_rslora", "lora", (7, 9), {"r": 3, "alpha": 16.0, "use_rslora": True}, batch=(1, 2, 2)),
    # FourierFT: PEFT locations for seeds 777, 0, negative, > 2^32; n = 1 and n = d_out·d_in; odd sizes; random indices.
    ValidSpec("square_8x8_n10_seed777", "fourierft", (8, 8), {"n": 10, "alpha": 150.0, "seed": 777}, batch=(2, 3)),
    ValidSpec("tall_12x4_n1_seed0", "fourierft", (12, 4), {"n": 1, "alpha": 150.0, "seed": 0}, batch=(5,)),
    ValidSpec("wide_4x12_n48_full", "fourierft", (4, 12), {"n": 48, "alpha": 100.0, "seed": 777}),
    ValidSpec("tiny_1x1_n1", "fourierft", (1, 1), {"n": 1, "alpha": 150.0, "seed": 777}, batch=()),
    ValidSpec("tiny_1x5_n3_seed_negative", "fourierft", (1, 5), {"n": 3, "alpha": 150.0, "seed": -1}, batch=(2,)),
    ValidSpec("tiny_5x1_n2_seed_above_2p32", "fourierft", (5, 1), {"n": 2, "alpha": 150.0, "seed": 2**32 + 777}),
    ValidSpec("odd_7x9_n20_seed_2p40", "fourierft", (7, 9), {"n": 20, "alpha": 1.0, "seed": 2**40 + 3}, batch=(1, 2, 2)),
    ValidSpec("even_6x10_n30_seed42", "fourierft", (6, 10), {"n": 30, "alpha": 150.0, "seed": 42}),
    ValidSpec("random_indices_6x10_n7", "fourierft", (6, 10), {"n": 7, "alpha": 150.0, "seed": 777}, random_indices=True),
    ValidSpec("random_indices_9x7_n30", "fourierft", (9, 7), {"n": 30, "alpha": 0.5, "seed": 777}, batch=(2, 2), random_indices=True),
    # sDCTFT: locations selected from W; n = 1 and n = d_out·d_in; other bands and energy fractions.
    ValidSpec("square_8x8_n10", "sdctft", (8, 8), {"n": 10, "alpha": 1.0, "seed": 0}, batch=(2, 3)),
    ValidSpec("tall_12x4_n1", "sdctft", (12, 4), {"n": 1, "alpha": 2.0, "seed": 1}, batch=(5,)),
    ValidSpec("wide_4x12_n48_full", "sdctft", (4, 12), {"n": 48, "alpha": 1.0, "seed": 0}),
    ValidSpec("tiny_1x1_n1", "sdctft", (1, 1), {"n": 1, "alpha": 1.0, "seed": 0}, batch=()),
    ValidSpec("tiny_1x5_n3", "sdctft", (1, 5), {"n": 3, "alpha": 0.5, "seed": 3}, batch=(2,)),
    ValidSpec("odd_7x9_n20_bands2", "sdctft", (7, 9), {"n": 20, "alpha": 1.5, "seed": 7, "energy_fraction": 0.5, "bands": 2}),
    # DCFT: stride = d (Kronecker), stride < d (overlapping kernels), stride > d (gaps), k > 1, scalings ≠ 1.
    ValidSpec("square_8x8_d4", "dcft", (8, 8), {"d": 4, "k": 1, "scaling": 1.0}, batch=(2, 3)),
    ValidSpec("tall_12x4_d4_k2", "dcft", (12, 4), {"d": 4, "k": 2, "scaling": 0.5}, batch=(5,)),
    ValidSpec("wide_4x12_d2_k2", "dcft", (4, 12), {"d": 2, "k": 2, "scaling": 2.0}),
    ValidSpec("overlap_10x7_d4_s3", "dcft", (10, 7), {"d": 4, "stride": 3, "k": 1, "scaling": 1.5}),
    ValidSpec("overlap_5x6_d3_s1_k2", "dcft", (5, 6), {"d": 3, "stride": 1, "k": 2, "scaling": 1.0}, batch=(2, 2)),
    ValidSpec("tiny_1x1_d1", "dcft", (1, 1), {"d": 1, "k": 1, "scaling": 1.0}, batch=()),
    ValidSpec("gaps_1x5_d1_s2", "dcft", (1, 5), {"d": 1, "stride": 2, "k": 1, "scaling": 3.0}, batch=(2,)),
    ValidSpec("original_scaling_6x6_d3", "dcft", (6, 6), {"d": 3, "k": 1, "scaling": 16.0 / (1 + 1e-5)}),
    # Bone: divisible and non-divisible d_in, r = 1, r = d_in, and mini (tiled D, incl. non-divisible d_in).
    ValidSpec("square_8x8_r2", "bone", (8, 8), {"r": 2}, batch=(2, 3)),
    ValidSpec("tall_12x4_r4_eq_din", "bone", (12, 4), {"r": 4}, batch=(5,)),
    ValidSpec("wide_4x12_r5_nondivisible", "bone", (4, 12), {"r": 5}),
    ValidSpec("nondivisible_6x7_r3", "bone", (6, 7), {"r": 3}),
    ValidSpec("tiny_1x1_r1", "bone", (1, 1), {"r": 1}, batch=()),
    ValidSpec("tiny_1x5_r2", "bone", (1, 5), {"r": 2}, batch=(2,)),
    ValidSpec("r1_5x3", "bone", (5, 3), {"r": 1}),
    ValidSpec("mini_8x6_r3_m2", "bone", (8, 6), {"r": 3, "mini_r": 2}, batch=(2, 2)),
    ValidSpec("mini_12x5_r2_m4_nondivisible", "bone", (12, 5), {"r": 2, "mini_r": 4}),
    ValidSpec("mini_4x4_r4_m1", "bone", (4, 4), {"r": 4, "mini_r": 1}),
    # Bat: r = 1, r = d_in, r = d_out, several blocks each way.
    ValidSpec("square_8x8_r2", "bat", (8, 8), {"r": 2}, batch=(2, 3)),
    ValidSpec("tall_12x4_r4_eq_din", "bat", (12, 4), {"r": 4}, batch=(5,)),
    ValidSpec("wide_4x12_r2", "bat", (4, 12), {"r": 2}),
    ValidSpec("tiny_1x1_r1", "bat", (1, 1), {"r": 1}, batch=()),
    ValidSpec("tiny_1x4_r1", "bat", (1, 4), {"r": 1}, batch=(2,)),
    ValidSpec("r1_3x5", "bat", (3, 5), {"r": 1}, batch=(2, 2)),
    ValidSpec("blocks_6x9_r3", "bat", (6, 9), {"r": 3}),
    ValidSpec("r_eq_dout_3x6_r3", "bat", (3, 6), {"r": 3}, batch=(2, 2)),
    # SVD re-scaling: r = 1, r = min(d_out, d_in).
    ValidSpec("square_8x8_r3", "svd_rescale", (8, 8), {"r": 3}, batch=(2, 3)),
    ValidSpec("tall_12x4_r4_full", "svd_rescale", (12, 4), {"r": 4}, batch=(5,)),
    ValidSpec("wide_4x12_r1", "svd_rescale", (4, 12), {"r": 1}),
    ValidSpec("tiny_1x1_r1", "svd_rescale", (1, 1), {"r": 1}, batch=()),
    ValidSpec("tiny_1x5_r1", "svd_rescale", (1, 5), {"r": 1}, batch=(2,)),
    ValidSpec("odd_7x9_r7_full", "svd_rescale", (7, 9), {"r": 7}, batch=(1, 2, 2)),
]

_SHAPE_OPS = PARAM_OPS + ("num_trainable",)  # a config that does not fit the shape: every operation must refuse

INVALID = [
    InvalidSpec("r0", "lora", (6, 8), {"r": 0}, "rank r = 0 (must be >= 1)", _SHAPE_OPS, {"A": (1, 8), "B": (6, 1)}),
    InvalidSpec("wrong_A_shape", "lora", (6, 8), {"r": 2, "alpha": 4.0}, "A has shape (3, 8), expected (2, 8)", shapes={"A": (3, 8)}),
    InvalidSpec("nan_B", "lora", (6, 8), {"r": 2, "alpha": 4.0}, "B holds a NaN", edit=_nan("B")),
    InvalidSpec("duplicate_indices", "fourierft", (6, 8), {"n": 5, "seed": 777}, "indices repeat a location", edit=_duplicate_index),
    InvalidSpec("row_index_out_of_range", "fourierft", (6, 8), {"n": 5, "seed": 777}, "a row index equals d_out", edit=_set_index(0, 2, 6)),
    InvalidSpec("column_index_negative", "fourierft", (6, 8), {"n": 5, "seed": 777}, "a column index is -1", edit=_set_index(1, 3, -1)),
    InvalidSpec("n_above_size", "fourierft", (2, 3), {"n": 7, "seed": 777}, "n = 7 > d_out·d_in = 6", _SHAPE_OPS,
                {"spectrum": (7,)}, lambda p, rng: p.update(indices=np.stack([np.arange(7) // 3, np.arange(7) % 3]))),
    InvalidSpec("nan_spectrum", "fourierft", (6, 8), {"n": 5, "seed": 777}, "spectrum holds a NaN", edit=_nan("spectrum")),
    InvalidSpec("wrong_spectrum_shape", "fourierft", (6, 8), {"n": 5, "seed": 777}, "spectrum has shape (6,), expected (5,)", shapes={"spectrum": (6,)}),
    InvalidSpec("duplicate_indices", "sdctft", (6, 8), {"n": 5}, "indices repeat a location", edit=_duplicate_index),
    InvalidSpec("column_index_out_of_range", "sdctft", (6, 8), {"n": 5}, "a column index equals d_in", edit=_set_index(1, 0, 8)),
    InvalidSpec("n_above_size", "sdctft", (2, 3), {"n": 7}, "n = 7 > d_out·d_in = 6", _SHAPE_OPS,
                {"spectrum": (7,)}, lambda p, rng: p.update(indices=np.stack([np.arange(7) // 3, np.arange(7) % 3]))),
    InvalidSpec("inf_spectrum", "sdctft", (6, 8), {"n": 5}, "spectrum holds +inf",
                edit=lambda p, rng: p["spectrum"].__setitem__(0, np.inf)),
    InvalidSpec("non_whole_subspace", "dcft", (10, 8), {"d": 4}, "(d_out − d)/stride = 1.5 is not whole", _SHAPE_OPS,
                {"A": (1, 2), "B": (2, 1), "C": (4, 4)}),
    InvalidSpec("kernel_above_d_in", "dcft", (8, 3), {"d": 4}, "kernel d = 4 > d_in = 3", _SHAPE_OPS,
                {"A": (1, 1), "B": (2, 1), "C": (4, 4)}),
    InvalidSpec("wrong_C_shape", "dcft", (8, 8), {"d": 4}, "C has shape (4, 2), expected (4, 4)", shapes={"C": (4, 2)}),
    InvalidSpec("nan_C", "dcft", (8, 8), {"d": 4}, "C holds a NaN", edit=_nan("C")),
    InvalidSpec("mini_r_not_dividing_d_out", "bone", (6, 8), {"r": 2, "mini_r": 4}, "mini_r = 4 does not divide d_out = 6",
                _SHAPE_OPS, {"D": (2, 4)}),
    InvalidSpec("r_above_d_in", "bone", (6, 4), {"r": 5}, "r = 5 > d_in = 4", _SHAPE_OPS, {"D": (5, 6)}),
    InvalidSpec("wrong_D_shape", "bone", (6, 8), {"r": 2}, "D has shape (6, 2), expected (2, 6)", shapes={"D": (6, 2)}),
    InvalidSpec("nan_D", "bone", (6, 8), {"r": 2}, "D holds a NaN", edit=_nan("D")),
    InvalidSpec("r_not_dividing_d_in", "bat", (6, 8), {"r": 3}, "r = 3 does not divide d_in = 8", _SHAPE_OPS, {"B": (2, 3, 3)}),
    InvalidSpec("r_not_dividing_d_out", "bat", (6, 8), {"r": 4}, "r = 4 does not divide d_out = 6", _SHAPE_OPS, {"B": (1, 4, 4)}),
    InvalidSpec("wrong_B_shape", "bat", (8, 8), {"r": 2}, "B has shape (2, 2, 2), expected (4, 2, 2)", shapes={"B": (2, 2, 2)}),
    InvalidSpec("nan_B", "bat", (8, 8), {"r": 2}, "B holds a NaN", edit=_nan("B")),
    InvalidSpec("singular_unmerge", "bat", (8, 8), {"r": 2}, "I + B_0 is singular: unmerge has no answer", ("unmerge",),
                edit=_singular_block),
    InvalidSpec("r_above_min_dim", "svd_rescale", (6, 4), {"r": 5}, "r = 5 > min(d_out, d_in) = 4", _SHAPE_OPS,
                {"s": (5,), "b": (6,), "U": (6, 5), "V": (4, 5), "sigma0": (5,)}),
    InvalidSpec("wrong_U_shape", "svd_rescale", (6, 4), {"r": 2}, "U has shape (4, 2), expected (6, 2)", shapes={"U": (4, 2)}),
    InvalidSpec("nan_s", "svd_rescale", (6, 4), {"r": 2}, "s holds a NaN", edit=_nan("s")),
]

LOCATIONS = [
    LocationsSpec("seed777_768x768_n1000", 777, (768, 768), 1000),  # RoBERTa-base attention, PEFT's defaults
    LocationsSpec("seed_above_2p32_768x768_n1000", 2**32 + 777, (768, 768), 1000),  # = seed 777: torch keeps seed mod 2^32
    LocationsSpec("seed0_768x3072_n500", 0, (768, 3072), 500),
    LocationsSpec("seed_negative_64x48_n100", -777, (64, 48), 100),
    LocationsSpec("seed_2p40_5x7_full", 2**40 + 3, (5, 7), 35),  # a full permutation
    LocationsSpec("seed777_1x1_n1", 777, (1, 1), 1),
    LocationsSpec("seed777_1x5_n5", 777, (1, 5), 5),
    LocationsSpec("seed123456789_2048x2048_n200", 123456789, (2048, 2048), 200),
]


def all_cases() -> list[Case]:
    """Every case of the shipped vectors, in a fixed order."""
    return (
        [build_valid(spec) for spec in VALID]
        + [build_invalid(spec) for spec in INVALID]
        + [build_locations(spec) for spec in LOCATIONS]
        + [
            invalid_locations("locations_n_above_size", 777, (2, 3), 7, "n = 7 > d_out·d_in = 6"),
            invalid_locations("locations_n0", 777, (2, 3), 0, "n = 0 (must be >= 1)"),
        ]
    )
