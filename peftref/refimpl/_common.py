"""Shared checks and the additive-adapter plumbing used by every method module.

Every public function of a method validates its inputs here first, so that bad input fails with a message that names the
method, the parameter, what was expected and what was given — never with a traceback from deep inside NumPy.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

Params = Mapping[str, np.ndarray]


def fail(method: str, what: str) -> ValueError:
    """A ValueError whose message starts with the method id."""
    return ValueError(f"{method}: {what}")


def check_int(method: str, name: str, value, low: int = 1, high: int | None = None) -> None:
    """Require an int (not bool) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{method}: config field {name!r} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise fail(method, f"config field {name!r} must be {bound}, got {value}")


def check_real(method: str, name: str, value) -> None:
    """Require a finite real number (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{method}: config field {name!r} must be a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise fail(method, f"config field {name!r} must be finite, got {value}")


def check_choice(method: str, name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise fail(method, f"config field {name!r} must be one of {choices}, got {value!r}")


def config_from_dict(config_cls, mapping: Mapping):
    """Build a Config from a plain dict, naming unknown fields (used by checkpoints and conformance candidates)."""
    method = config_cls.__module__.rsplit(".", 1)[-1]
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{method}: config fields must be a mapping name -> value, got {type(mapping).__name__}")
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise fail(method, f"unknown config field(s) {unknown}; expected a subset of {sorted(known)}")
    return config_cls(**mapping)


def check_config(method: str, cfg, config_type: type) -> None:
    """Require an instance of the method's own Config (not another method's, not a dict)."""
    if not isinstance(cfg, config_type):
        given = type(cfg)
        owner = given.__module__.rsplit(".", 1)[-1] + "." if given.__module__.startswith(__package__ + ".") else ""
        raise TypeError(f"{method}: cfg must be a {method}.Config, got {owner}{given.__qualname__}")


def as_array(method: str, label: str, value) -> np.ndarray:
    """np.asarray(value), naming `label` when NumPy cannot make a rectangular array of it (a ragged list, say)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        given = type(value).__name__
        raise fail(method, f"{label} must be a rectangular numeric array, got a {given} NumPy cannot convert ({err})") from None


def as_float64(method: str, name: str, array, ndim: int | None = None, kind: str = "") -> np.ndarray:
    """`array` as a finite float64 ndarray (optionally of exactly `ndim` dimensions); messages call it `kind 'name'`."""
    label = f"{kind} {name!r}".lstrip()
    a = as_array(method, label, array)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        if a.dtype.name != "bfloat16":  # ml_dtypes' bfloat16 is a real float type NumPy does not classify
            raise TypeError(f"{method}: {label} must be a real numeric array, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise fail(method, f"{label} must be {ndim}-D, got shape {a.shape}")
    a = a.astype(np.float64, copy=False)
    distinct = a[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in a.strides)]  # a broadcast value once
    if not np.all(np.isfinite(distinct)):
        raise fail(method, f"{label} contains non-finite values (NaN or Inf)")
    return a


def as_weight(method: str, W) -> np.ndarray:
    """The base weight W (d_out, d_in) as float64."""
    W = as_float64(method, "W", W, ndim=2)
    if 0 in W.shape:
        raise fail(method, f"'W' must have non-zero dimensions, got shape {W.shape}")
    return W


def as_shape(method: str, shape) -> tuple[int, int]:
    """A (d_out, d_in) pair of positive ints."""
    try:
        d_out, d_in = (operator.index(s) for s in shape)  # ints, NumPy ints; not 8.5, not "8"
    except (TypeError, ValueError):
        raise fail(method, f"shape must be a pair (d_out, d_in) of ints, got {shape!r}") from None
    if d_out < 1 or d_in < 1:
        raise fail(method, f"shape must be positive, got {(d_out, d_in)}")
    return d_out, d_in


def as_tokens(method: str, name: str, x, width: int, width_name: str) -> np.ndarray:
    """Activations (..., width) as float64; at least 1-D."""
    x = as_float64(method, name, x)
    if x.ndim < 1 or x.shape[-1] != width:
        raise fail(method, f"{name!r} must have shape (..., {width_name}={width}), got {x.shape}")
    return x


def as_bias(method: str, bias, d_out: int) -> np.ndarray | None:
    if bias is None:
        return None
    bias = as_float64(method, "bias", bias, ndim=1)
    if bias.shape != (d_out,):
        raise fail(method, f"'bias' must have shape ({d_out},) (d_out), got {bias.shape}")
    return bias


def check_params(method: str, params: Params, expected: Mapping[str, tuple], index_names: tuple = ()) -> dict:
    """Validate `params` against `expected` {name: shape}; return float64 arrays (int64 for `index_names`).

    Missing or extra keys, a wrong shape, a non-numeric dtype or a non-finite value raise an error that names the key.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"{method}: params must be a mapping name -> array, got {type(params).__name__}")
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise fail(method, f"params must have keys {sorted(expected)}; missing {missing}, unexpected {extra}")
    out = {}
    for name, shape in expected.items():
        value = as_array(method, f"parameter {name!r}", params[name])
        if value.shape != tuple(shape):
            raise fail(method, f"parameter {name!r} must have shape {tuple(shape)}, got {value.shape}")
        if name in index_names:
            if not np.issubdtype(value.dtype, np.integer):
                if not (np.issubdtype(value.dtype, np.floating) and np.all(value == np.round(value))):
                    raise TypeError(f"{method}: parameter {name!r} must hold integers, got dtype {value.dtype}")
            out[name] = value.astype(np.int64)
        else:
            out[name] = as_float64(method, name, value, kind="parameter")
    return out


def as_generator(rng) -> np.random.Generator:
    """`rng` may be a Generator, an int seed or None (seed 0: the reference is deterministic by default)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")


def base_forward(x: np.ndarray, W: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """y = x Wᵀ + b."""
    y = x @ W.T  # (..., d_out)
    return y if bias is None else y + bias


def token_matrix(a: np.ndarray) -> np.ndarray:
    """Flatten leading batch dimensions: (..., d) -> (tokens, d)."""
    return a.reshape(-1, a.shape[-1])


def check_vjp_inputs(method: str, x, W, gy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (..., d_in), W (d_out, d_in), gy (..., d_out) with the same leading dimensions, all float64."""
    W = as_weight(method, W)
    d_out, d_in = W.shape
    x = as_tokens(method, "x", x, d_in, "d_in")
    gy = as_tokens(method, "gy", gy, d_out, "d_out")
    if gy.shape[:-1] != x.shape[:-1]:
        raise fail(method, f"'gy' must have shape {x.shape[:-1] + (d_out,)} to match x, got {gy.shape}")
    return x, W, gy


@dataclass(frozen=True)
class AdditiveMethod:
    """The plumbing shared by every method whose ΔW does not depend on W's values.

    y = x Wᵀ + b + δ(x) with δ(x) = x ΔWᵀ computed in the method's efficient form;
    merge(W) = W + ΔW; unmerge(W') = W' − ΔW; ∂L/∂x = gy W + gy ΔW.
    The method supplies its validation and the four maps below, each on validated float64 parameters.
    """

    name: str
    config_type: type
    validate: Callable[[Params, tuple, Any], dict]  # (params, (d_out, d_in), cfg) -> checked arrays
    dense_delta: Callable[[dict, tuple, Any], np.ndarray]  # -> ΔW (d_out, d_in)
    delta_forward: Callable[[np.ndarray, dict, Any, tuple], np.ndarray]  # x (T, d_in) -> x ΔWᵀ (T, d_out)
    delta_adjoint: Callable[[np.ndarray, dict, Any, tuple], np.ndarray]  # gy (T, d_out) -> gy ΔW (T, d_in)
    grads: Callable[[np.ndarray, np.ndarray, dict, Any, tuple], dict]  # (x, gy, ...) -> {trainable: ∂L/∂p}

    def checked(self, W, params, cfg) -> tuple[np.ndarray, dict]:
        check_config(self.name, cfg, self.config_type)
        W = as_weight(self.name, W)
        return W, self.validate(params, W.shape, cfg)

    def delta_weight(self, W, params, cfg) -> np.ndarray:
        W, p = self.checked(W, params, cfg)
        return self.dense_delta(p, W.shape, cfg)

    def merge(self, W, params, cfg) -> np.ndarray:
        W, p = self.checked(W, params, cfg)
        return W + self.dense_delta(p, W.shape, cfg)

    def unmerge(self, W_merged, params, cfg) -> np.ndarray:
        W_merged, p = self.checked(W_merged, params, cfg)
        return W_merged - self.dense_delta(p, W_merged.shape, cfg)

    def forward(self, x, W, params, cfg, bias=None) -> np.ndarray:
        W, p = self.checked(W, params, cfg)
        x = as_tokens(self.name, "x", x, W.shape[1], "d_in")
        bias = as_bias(self.name, bias, W.shape[0])
        x2 = token_matrix(x)  # (T, d_in)
        y = base_forward(x2, W, bias) + self.delta_forward(x2, p, cfg, W.shape)  # (T, d_out)
        return y.reshape(x.shape[:-1] + (W.shape[0],))

    def vjp(self, x, W, params, cfg, gy) -> tuple[np.ndarray, dict]:
        check_config(self.name, cfg, self.config_type)
        x, W, gy = check_vjp_inputs(self.name, x, W, gy)
        p = self.validate(params, W.shape, cfg)
        x2, gy2 = token_matrix(x), token_matrix(gy)  # (T, d_in), (T, d_out)
        gx = gy2 @ W + self.delta_adjoint(gy2, p, cfg, W.shape)  # (T, d_in)
        return gx.reshape(x.shape), self.grads(x2, gy2, p, cfg, W.shape)
