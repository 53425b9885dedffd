"""One validated :class:`~peftref.adapter.LayerAdapter` from arrays found in a file, and the base-shape checks.

Whatever the format, a layer is accepted only if its parameters are exactly the method's (nothing missing, nothing
extra), each has the shape ``refimpl.<method>.param_shapes`` gives for the layer, a floating-point dtype (integers for
indices), finite values, and valid indices. Errors name the file, the module and the key.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .. import refimpl
from ..adapter import LayerAdapter
from ..refimpl import _spectral
from ._files import CheckpointError, check_float
from .base import BaseShapes, describe_base
from .matching import resolve_module


def make_config(path, module: str, method: str, fields: dict):
    """refimpl's validated Config, its errors prefixed with the file and module."""
    try:
        return refimpl.make_config(method, fields)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: module {module!r}: {err}") from None


def build_layer(
    path, module: str, method: str, cfg, shape: tuple[int, int], arrays: Mapping[str, np.ndarray], keys: Mapping[str, str],
    fan_in_fan_out: bool = False,
) -> LayerAdapter:
    """A LayerAdapter after checking `arrays` {param: array} against the method; `keys` {param: key in the file} for errors."""
    m = refimpl.get(method)
    try:
        expected = m.param_shapes(shape, cfg)
    except ValueError as err:
        raise CheckpointError(f"{path}: module {module!r} with shape (d_out, d_in) = {shape}: {err}") from None
    missing = sorted(keys.get(name, name) for name in expected if name not in arrays)
    extra = sorted(keys.get(name, name) for name in arrays if name not in expected)
    if missing or extra:
        raise CheckpointError(f"{path}: module {module!r}: missing keys {missing}, unexpected keys {extra}")
    for name, want in expected.items():
        where, array = f"module {module!r}, key {keys.get(name, name)!r}", np.asarray(arrays[name])
        if array.shape != tuple(want):
            raise CheckpointError(f"{path}: {where}: expected shape {tuple(want)} for (d_out, d_in) = {shape}, got {array.shape}")
        if name == "indices":
            if not np.issubdtype(array.dtype, np.integer):
                raise CheckpointError(f"{path}: {where}: expected an integer dtype for indices, got {array.dtype.name}")
        else:
            check_float(path, where, array)
    if "indices" in expected:
        try:
            _spectral.check_indices(method, np.asarray(arrays["indices"], dtype=np.int64), shape)
        except ValueError as err:
            raise CheckpointError(f"{path}: module {module!r}, key {keys.get('indices', 'indices')!r}: {err}") from None
    return LayerAdapter(module, method, cfg, dict(arrays), shape, fan_in_fan_out)


def logical_shape(stored: tuple[int, int], fan_in_fan_out: bool) -> tuple[int, int]:
    """(d_out, d_in) of a weight stored as `stored`: Conv1D (fan_in_fan_out) stores (d_in, d_out)."""
    return (stored[1], stored[0]) if fan_in_fan_out else tuple(stored)


def resolve_shape(
    path, module: str, implied: tuple[int | None, int | None], shapes: BaseShapes | None, base, fan_in_fan_out: bool
) -> tuple[int, int]:
    """(d_out, d_in) of `module`: what the adapter implies (None where it does not fix a size), checked against and
    completed from the base. A module missing from the base, or a size that disagrees with it, is an error."""
    if shapes is None:
        if None in implied:
            unknown = " and ".join(n for n, v in zip(("d_out", "d_in"), implied) if v is None)
            raise CheckpointError(
                f"{path}: module {module!r}: the adapter does not fix {unknown}; give the base model (base= or --base: "
                "an ONNX model, safetensors weights, or a {module: shape} mapping)"
            )
        return implied
    try:
        name = resolve_module(module, shapes, where=describe_base(base))
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    found = logical_shape(shapes[name], fan_in_fan_out)
    if any(want is not None and want != got for want, got in zip(implied, found)):
        layout = "(d_in, d_out) since fan_in_fan_out" if fan_in_fan_out else "(d_out, d_in)"
        sizes = ", ".join(f"{n} = {v}" for n, v in zip(("d_out", "d_in"), implied) if v is not None)
        raise CheckpointError(
            f"{path}: module {module!r}: the adapter implies {sizes}, but {name!r} in {describe_base(base)} has weight "
            f"shape {shapes[name]}, read as {layout}: (d_out, d_in) = {found}"
        )
    return found
