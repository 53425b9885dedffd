"""Bad input gets a ValueError/TypeError whose message names the method, the parameter, what was expected and what was given —
never a traceback from inside NumPy. One test per bad input: the generic ones for every method, then each method's own."""

from __future__ import annotations

import numpy as np
import pytest

from peftref import refimpl
from peftref.refimpl import bat, bone, dcft, fourierft, lora, sdctft, svd_rescale

SHAPE = (8, 12)  # (d_out, d_in), valid for every config below
CONFIGS = {
    "lora": lora.Config(r=2),
    "fourierft": fourierft.Config(n=10),
    "sdctft": sdctft.Config(n=10),
    "dcft": dcft.Config(d=2, k=1),
    "bone": bone.Config(r=4),
    "bat": bat.Config(r=4),
    "svd_rescale": svd_rescale.Config(r=3),
}
W = np.random.default_rng(0).standard_normal(SHAPE)
PARAMS = {method: refimpl.get(method).init(W, cfg, 0) for method, cfg in CONFIGS.items()}


def call(method: str, function: str = "forward", **changes):
    """A thunk calling refimpl.<method>.<function> on the valid layer above with some arguments replaced."""
    m = refimpl.get(method)
    args = {"W": W, "params": PARAMS[method], "cfg": CONFIGS[method], "x": np.ones((3, SHAPE[1])), "gy": np.ones((3, SHAPE[0]))}
    args.update(changes)
    signature = {
        "forward": ("x", "W", "params", "cfg"),
        "vjp": ("x", "W", "params", "cfg", "gy"),
        "delta_weight": ("W", "params", "cfg"),
        "merge": ("W", "params", "cfg"),
        "unmerge": ("W", "params", "cfg"),
        "init": ("W", "cfg"),
    }[function]
    extra = {"bias": args["bias"]} if "bias" in args else {}
    return lambda: getattr(m, function)(*(args[name] for name in signature), **extra)


def with_param(method: str, name: str, value) -> dict:
    return {**PARAMS[method], name: value}


FIRST_TRAINABLE = {method: refimpl.get(method).TRAINABLE[0] for method in refimpl.METHODS}
OTHER = {method: "bone" if method == "lora" else "lora" for method in refimpl.METHODS}  # a method whose Config is the wrong one
OTHER_CONFIG = {method: CONFIGS[OTHER[method]] for method in refimpl.METHODS}

#: name -> method -> (thunk, exception, message regex). Every method gets every one of these.
GENERIC = {
    "W-complex": lambda m: (call(m, W=W.astype(complex)), TypeError, rf"{m}: 'W' must be a real numeric array, got dtype complex128"),
    "W-strings": lambda m: (call(m, "merge", W=np.full(SHAPE, "a")), TypeError, rf"{m}: 'W' must be a real numeric array, got dtype <U1"),
    "W-objects": lambda m: (
        call(m, "delta_weight", W=np.full(SHAPE, None)),
        TypeError,
        rf"{m}: 'W' must be a real numeric array, got dtype object",
    ),
    "W-bool": lambda m: (call(m, "merge", W=W > 0), TypeError, rf"{m}: 'W' must be a real numeric array, got dtype bool"),
    "W-1d": lambda m: (call(m, "merge", W=W[0]), ValueError, rf"{m}: 'W' must be 2-D, got shape \(12,\)"),
    "W-nan": lambda m: (call(m, "merge", W=np.where(W > 1, np.nan, W)), ValueError, rf"{m}: 'W' contains non-finite values"),
    "W-inf-init": lambda m: (call(m, "init", W=np.full(SHAPE, np.inf)), ValueError, rf"{m}: 'W' contains non-finite values"),
    "W-ragged": lambda m: (call(m, "merge", W=[[1.0, 2.0], [3.0]]), ValueError, rf"{m}: 'W' must be a rectangular numeric array"),
    "W-zero-size-init": lambda m: (
        call(m, "init", W=np.zeros((0, 12))),
        ValueError,
        rf"{m}: 'W' must have non-zero dimensions, got shape \(0, 12\)",
    ),
    "params-not-mapping": lambda m: (call(m, params=[1, 2]), TypeError, rf"{m}: params must be a mapping name -> array, got list"),
    "params-missing-key": lambda m: (
        call(m, params={k: v for k, v in PARAMS[m].items() if k != FIRST_TRAINABLE[m]}),
        ValueError,
        rf"{m}: params must have keys \[.*\]; missing \['{FIRST_TRAINABLE[m]}'\], unexpected \[\]",
    ),
    "params-extra-key": lambda m: (
        call(m, params={**PARAMS[m], "lora_A": 1.0}),
        ValueError,
        rf"{m}: params must have keys .*; missing \[\], unexpected \['lora_A'\]",
    ),
    "param-wrong-shape": lambda m: (
        call(m, params=with_param(m, FIRST_TRAINABLE[m], np.zeros(PARAMS[m][FIRST_TRAINABLE[m]].shape + (1,)))),
        ValueError,
        rf"{m}: parameter '{FIRST_TRAINABLE[m]}' must have shape \({', '.join(map(str, PARAMS[m][FIRST_TRAINABLE[m]].shape))},?\), got \(",
    ),
    "param-complex": lambda m: (
        call(m, "delta_weight", params=with_param(m, FIRST_TRAINABLE[m], PARAMS[m][FIRST_TRAINABLE[m]] + 1j)),
        TypeError,
        rf"{m}: parameter '{FIRST_TRAINABLE[m]}' must be a real numeric array, got dtype complex128",
    ),
    "param-strings": lambda m: (
        call(m, "merge", params=with_param(m, FIRST_TRAINABLE[m], np.full(PARAMS[m][FIRST_TRAINABLE[m]].shape, "x"))),
        TypeError,
        rf"{m}: parameter '{FIRST_TRAINABLE[m]}' must be a real numeric array, got dtype <U1",
    ),
    "param-nan": lambda m: (
        call(m, "vjp", params=with_param(m, FIRST_TRAINABLE[m], np.full(PARAMS[m][FIRST_TRAINABLE[m]].shape, np.nan))),
        ValueError,
        rf"{m}: parameter '{FIRST_TRAINABLE[m]}' contains non-finite values",
    ),
    "cfg-of-another-method": lambda m: (call(m, cfg=OTHER_CONFIG[m]), TypeError, rf"{m}: cfg must be a {m}.Config, got {OTHER[m]}.Config"),
    "cfg-dict": lambda m: (call(m, "merge", cfg={"r": 2}), TypeError, rf"{m}: cfg must be a {m}.Config, got dict"),
    "x-wrong-width": lambda m: (call(m, x=np.ones((3, 11))), ValueError, rf"{m}: 'x' must have shape \(\.\.\., d_in=12\), got \(3, 11\)"),
    "x-scalar": lambda m: (call(m, x=np.float64(1.0)), ValueError, rf"{m}: 'x' must have shape \(\.\.\., d_in=12\), got \(\)"),
    "x-complex": lambda m: (
        call(m, x=np.ones((3, 12), complex)),
        TypeError,
        rf"{m}: 'x' must be a real numeric array, got dtype complex128",
    ),
    "x-inf": lambda m: (call(m, "vjp", x=np.full((3, 12), np.inf)), ValueError, rf"{m}: 'x' contains non-finite values"),
    "bias-wrong-shape": lambda m: (call(m, bias=np.zeros(7)), ValueError, rf"{m}: 'bias' must have shape \(8,\) \(d_out\), got \(7,\)"),
    "gy-batch-mismatch": lambda m: (
        call(m, "vjp", gy=np.ones((2, 8))),
        ValueError,
        rf"{m}: 'gy' must have shape \(3, 8\) to match x, got \(2, 8\)",
    ),
    "gy-wrong-width": lambda m: (
        call(m, "vjp", gy=np.ones((3, 9))),
        ValueError,
        rf"{m}: 'gy' must have shape \(\.\.\., d_out=8\), got \(3, 9\)",
    ),
    "shape-not-a-pair": lambda m: (
        lambda: refimpl.get(m).param_shapes((8, 12, 1), CONFIGS[m]),
        ValueError,
        rf"{m}: shape must be a pair \(d_out, d_in\) of ints, got \(8, 12, 1\)",
    ),
    "shape-fractional": lambda m: (
        lambda: refimpl.get(m).num_trainable((8.5, 12), CONFIGS[m]),
        ValueError,
        rf"{m}: shape must be a pair \(d_out, d_in\) of ints, got \(8.5, 12\)",
    ),
    "shape-zero": lambda m: (
        lambda: refimpl.get(m).param_shapes((0, 12), CONFIGS[m]),
        ValueError,
        rf"{m}: shape must be positive, got \(0, 12\)",
    ),
    "rng-wrong-type": lambda m: (
        lambda: refimpl.get(m).init(W, CONFIGS[m], "seed"),
        TypeError,
        r"rng must be a numpy Generator, an int seed or None, got str",
    ),
    "init-cfg-of-another-method": lambda m: (
        call(m, "init", cfg=OTHER_CONFIG[m]),
        TypeError,
        rf"{m}: cfg must be a {m}.Config, got {OTHER[m]}.Config",
    ),
    "param-shapes-cfg-of-another-method": lambda m: (
        lambda: refimpl.get(m).param_shapes(SHAPE, OTHER_CONFIG[m]),
        TypeError,
        rf"{m}: cfg must be a {m}.Config, got {OTHER[m]}.Config",
    ),
    "num-trainable-cfg-none": lambda m: (
        lambda: refimpl.get(m).num_trainable(SHAPE, None),
        TypeError,
        rf"{m}: cfg must be a {m}.Config, got NoneType",
    ),
}


@pytest.mark.parametrize("case", GENERIC)
@pytest.mark.parametrize("method", refimpl.METHODS)
def test_generic_bad_input(method, case):
    thunk, error, message = GENERIC[case](method)
    with pytest.raises(error, match=message):
        thunk()


def spectral_indices(method: str, indices) -> dict:
    return with_param(method, "indices", np.asarray(indices))


def _dup(method):
    indices = PARAMS[method]["indices"].copy()
    indices[:, 1] = indices[:, 0]
    return indices


#: (thunk, exception, message regex), one per method-specific bad input.
SPECIFIC = {
    "lora-r-zero": (lambda: lora.Config(r=0), ValueError, r"lora: config field 'r' must be >= 1, got 0"),
    "lora-r-string": (lambda: lora.Config(r="8"), TypeError, r"lora: config field 'r' must be an int, got str '8'"),
    "lora-r-bool": (lambda: lora.Config(r=True), TypeError, r"lora: config field 'r' must be an int, got bool True"),
    "lora-alpha-nan": (lambda: lora.Config(alpha=float("nan")), ValueError, r"lora: config field 'alpha' must be finite, got nan"),
    "lora-alpha-string": (lambda: lora.Config(alpha="8"), TypeError, r"lora: config field 'alpha' must be a real number, got str '8'"),
    "lora-rslora-int": (lambda: lora.Config(use_rslora=1), TypeError, r"lora: config field 'use_rslora' must be a bool, got 1"),
    "fourierft-n-zero": (lambda: fourierft.Config(n=0), ValueError, r"fourierft: config field 'n' must be >= 1, got 0"),
    "fourierft-n-too-large": (
        lambda: fourierft.param_shapes(SHAPE, fourierft.Config(n=97)),
        ValueError,
        r"fourierft: config field 'n' must be <= d_out·d_in = 96 for shape \(8, 12\), got 97",
    ),
    "fourierft-init-unknown": (
        lambda: fourierft.Config(init="uniform"),
        ValueError,
        r"fourierft: config field 'init' must be one of \('normal', 'zeros'\), got 'uniform'",
    ),
    "fourierft-seed-float": (
        lambda: fourierft.Config(seed=7.0),
        TypeError,
        r"fourierft: config field 'seed' must be an int, got float 7.0",
    ),
    "sdctft-energy-fraction": (
        lambda: sdctft.Config(energy_fraction=1.5),
        ValueError,
        r"sdctft: config field 'energy_fraction' must be in \[0, 1\], got 1.5",
    ),
    "sdctft-bands-zero": (lambda: sdctft.Config(bands=0), ValueError, r"sdctft: config field 'bands' must be >= 1, got 0"),
    "sdctft-seed-negative": (lambda: sdctft.Config(seed=-1), ValueError, r"sdctft: config field 'seed' must be >= 0, got -1"),
    "sdctft-n-too-large-init": (
        lambda: sdctft.init(W, sdctft.Config(n=97)),
        ValueError,
        r"sdctft: config field 'n' must be <= d_out·d_in = 96",
    ),
    "dcft-d-zero": (lambda: dcft.Config(d=0), ValueError, r"dcft: config field 'd' must be >= 1, got 0"),
    "dcft-stride-zero": (lambda: dcft.Config(d=2, stride=0), ValueError, r"dcft: config field 'stride' must be >= 1, got 0"),
    "dcft-k-zero": (lambda: dcft.Config(k=0), ValueError, r"dcft: config field 'k' must be >= 1, got 0"),
    "dcft-n-in-not-whole": (
        lambda: dcft.param_shapes((8, 11), dcft.Config(d=2)),
        ValueError,
        r"dcft: d_in = 11 does not fit kernel d = 2 with stride 2: need d_in = d \+ stride·m for a whole m >= 0",
    ),
    "dcft-n-out-not-whole": (
        lambda: dcft.init(np.zeros((9, 12)), dcft.Config(d=4, stride=2)),
        ValueError,
        r"dcft: d_out = 9 does not fit kernel d = 4 with stride 2",
    ),
    "dcft-kernel-larger-than-layer": (
        lambda: dcft.num_trainable((8, 3), dcft.Config(d=4)),
        ValueError,
        r"dcft: d_in = 3 does not fit kernel d = 4",
    ),
    "bone-r-zero": (lambda: bone.Config(r=0), ValueError, r"bone: config field 'r' must be >= 1, got 0"),
    "bone-r-above-d-in": (
        lambda: bone.param_shapes(SHAPE, bone.Config(r=13)),
        ValueError,
        r"bone: config field 'r' must be <= d_in = 12, got 13",
    ),
    "bone-mini-r-not-dividing": (
        lambda: bone.init(W, bone.Config(r=4, mini_r=3)),
        ValueError,
        r"bone: config field 'mini_r' = 3 must divide d_out = 8",
    ),
    "bone-mini-r-zero": (lambda: bone.Config(mini_r=0), ValueError, r"bone: config field 'mini_r' must be >= 1, got 0"),
    "bat-r-not-dividing-d-in": (
        lambda: bat.init(np.zeros((8, 10)), bat.Config(r=4)),
        ValueError,
        r"bat: config field 'r' = 4 must divide both d_out = 8 and d_in = 10",
    ),
    "bat-r-not-dividing-d-out": (
        lambda: bat.num_trainable((6, 12), bat.Config(r=4)),
        ValueError,
        r"bat: config field 'r' = 4 must divide both d_out = 6 and d_in = 12",
    ),
    "bat-unmerge-singular": (
        lambda: bat.unmerge(W, {"B": np.stack([np.zeros((4, 4)), -np.eye(4)])}, CONFIGS["bat"]),
        ValueError,
        r"bat: cannot unmerge: I \+ B\[1\] \(output rows 4\.\.7\) is singular or ill-conditioned \(condition number",
    ),
    "svd-r-above-min": (
        lambda: svd_rescale.init(W, svd_rescale.Config(r=9)),
        ValueError,
        r"svd_rescale: config field 'r' must be <= min\(d_out, d_in\) = 8, got 9",
    ),
    "svd-r-zero": (lambda: svd_rescale.Config(r=0), ValueError, r"svd_rescale: config field 'r' must be >= 1, got 0"),
    "svd-frozen-nan": (
        call("svd_rescale", "merge", params=with_param("svd_rescale", "U", np.full((8, 3), np.nan))),
        ValueError,
        r"svd_rescale: parameter 'U' contains non-finite values",
    ),
}
for _method in ("fourierft", "sdctft"):
    SPECIFIC |= {
        f"{_method}-indices-duplicate": (
            call(_method, "delta_weight", params=spectral_indices(_method, _dup(_method))),
            ValueError,
            rf"{_method}: parameter 'indices' has duplicate location \(u=\d+, v=\d+\); locations must be distinct",
        ),
        f"{_method}-indices-row-out-of-range": (
            call(_method, params=spectral_indices(_method, PARAMS[_method]["indices"] + [[8], [0]])),
            ValueError,
            rf"{_method}: parameter 'indices' row \(u\) values must be in \[0, 8\), got range \[\d+, \d+\]",
        ),
        f"{_method}-indices-column-negative": (
            call(_method, "merge", params=spectral_indices(_method, PARAMS[_method]["indices"] - [[0], [12]])),
            ValueError,
            rf"{_method}: parameter 'indices' column \(v\) values must be in \[0, 12\), got range \[-\d+, -?\d+\]",
        ),
        f"{_method}-indices-fractional": (
            call(_method, "merge", params=spectral_indices(_method, PARAMS[_method]["indices"] + 0.5)),
            TypeError,
            rf"{_method}: parameter 'indices' must hold integers, got dtype float64",
        ),
        f"{_method}-indices-complex": (
            call(_method, "merge", params=spectral_indices(_method, PARAMS[_method]["indices"] + 0j)),
            TypeError,
            rf"{_method}: parameter 'indices' must hold integers, got dtype complex128",
        ),
        f"{_method}-indices-wrong-shape": (
            call(_method, "merge", params=spectral_indices(_method, PARAMS[_method]["indices"].T)),
            ValueError,
            rf"{_method}: parameter 'indices' must have shape \(2, 10\), got \(10, 2\)",
        ),
    }


@pytest.mark.parametrize("case", SPECIFIC)
def test_method_specific_bad_input(case):
    thunk, error, message = SPECIFIC[case]
    with pytest.raises(error, match=message):
        thunk()


def test_float_indices_holding_integers_are_accepted():
    """Indices that went through a float array (e.g. a JSON file) are fine when every value is a whole number."""
    params = spectral_indices("fourierft", PARAMS["fourierft"]["indices"].astype(float))
    expected = fourierft.delta_weight(W, PARAMS["fourierft"], CONFIGS["fourierft"])
    assert np.array_equal(fourierft.delta_weight(W, params, CONFIGS["fourierft"]), expected)
