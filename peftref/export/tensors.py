"""Initializer data in and out, one tensor at a time: inline or external, fp32/fp16/bf16, rounded once.

A model over 2 GB keeps its weights in external files (``location``, ``offset``, ``length`` in the tensor's
``external_data``). :func:`read_array` maps one such tensor read-only from its file (``numpy.memmap``), so a fold touches
one tensor's pages at a time and its memory stays near the largest tensor, not the model.

Rounding: the merged weight is computed in float64 or float32 and rounded *once* to the storage dtype, to nearest, ties
to even. NumPy does that for float32 and float16, and ``ml_dtypes`` from float32 to bfloat16. From float64, however,
``ml_dtypes`` converts to bfloat16 through float32, which rounds twice (1 + 2⁻⁸ + 2⁻³⁰ becomes 1 instead of 1 + 2⁻⁷);
:func:`round_to_dtype` instead rounds to float32 *to odd* first — float32 keeps 24 bits ≥ 2·8 + 2, so the second
rounding, float32 → bfloat16 to nearest even, then gives the correctly rounded result.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np
from onnx import TensorProto, external_data_helper, helper, numpy_helper


class ExportError(ValueError):
    """A model, adapter or output path the exporter cannot use; the message names the file, module and tensor."""


#: storage dtypes a folded weight may have: ONNX element type -> NumPy dtype.
FLOAT_TYPES = {
    TensorProto.FLOAT: np.dtype(np.float32),
    TensorProto.FLOAT16: np.dtype(np.float16),
    TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    TensorProto.DOUBLE: np.dtype(np.float64),
}


def dtype_name(data_type: int) -> str:
    """NumPy's name of an ONNX element type: float32, float16, bfloat16, ..."""
    return helper.tensor_dtype_to_np_dtype(data_type).name


def is_external(tensor: TensorProto) -> bool:
    return external_data_helper.uses_external_data(tensor)


def external_location(tensor: TensorProto, base_dir: Path) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor, checked: a relative path inside `base_dir`, within the file."""
    info = external_data_helper.ExternalDataInfo(tensor)
    location = Path(info.location)
    if not info.location or location.is_absolute() or ".." in location.parts:
        raise ExportError(f"tensor {tensor.name!r}: external data location {info.location!r} must be a relative path inside the model's directory")
    path = base_dir / location
    if not path.is_file():
        raise ExportError(f"tensor {tensor.name!r}: external data file {path} not found")
    offset = int(info.offset or 0)
    size = path.stat().st_size
    length = size - offset if info.length is None else int(info.length)
    expected = expected_nbytes(tensor)
    if expected is not None and length != expected:
        raise ExportError(f"tensor {tensor.name!r}: external data length {length} bytes, but shape {tuple(tensor.dims)} of {dtype_name(tensor.data_type)} needs {expected}")
    if offset + length > size:
        raise ExportError(f"tensor {tensor.name!r}: external data [{offset}, {offset + length}) runs past the end of {path} ({size} bytes); the file is truncated")
    return path, offset, length


def expected_nbytes(tensor: TensorProto) -> int | None:
    """Bytes of the tensor's raw data, for fixed-size element types."""
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError):
        return None
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1):
        return (int(np.prod(tensor.dims, dtype=np.int64)) + 1) // 2
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def nbytes(tensor: TensorProto, base_dir: Path) -> int:
    """Size of the tensor's data: external length, or raw bytes of an inline tensor."""
    if is_external(tensor):
        return external_location(tensor, base_dir)[2]
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return raw_bytes(tensor, base_dir).__len__()


def raw_bytes(tensor: TensorProto, base_dir: Path) -> bytes:
    """The little-endian raw bytes of an inline tensor (typed fields such as ``float_data`` converted)."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.from_array(numpy_helper.to_array(tensor, base_dir=os.fspath(base_dir))).raw_data


def read_array(tensor: TensorProto, base_dir: Path) -> np.ndarray:
    """The tensor's values, read-only: memory-mapped from its file when external, else decoded from the proto."""
    if not is_external(tensor):
        return numpy_helper.to_array(tensor)
    path, offset, _ = external_location(tensor, base_dir)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    shape = tuple(tensor.dims)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=offset, shape=shape)


def _float32_round_to_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded toward zero, with the last bit set when inexact ("round to odd")."""
    nearest = x.astype(np.float32)  # (...) to nearest even
    bits = nearest.view(np.uint32)
    rounded_away = np.abs(nearest.astype(np.float64)) > np.abs(x)
    bits = bits - rounded_away.astype(np.uint32)  # one ulp back toward zero (sign-magnitude: the bit pattern minus one)
    bits |= (bits.view(np.float32).astype(np.float64) != x).astype(np.uint32)  # inexact -> odd
    return bits.view(np.float32)


def round_to_dtype(x: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """float64 or float32 `x` rounded once to `dtype` (float32, float16, bfloat16 or float64), to nearest, ties to even.

    `out`: an array of `dtype` and x's shape to write the result into (no temporary); a new array when None.
    """
    if dtype == np.dtype(ml_dtypes.bfloat16) and x.dtype == np.float64:
        x = _float32_round_to_odd(x)  # then float32 -> bfloat16 to nearest even gives the correctly rounded value
    if out is None:
        return x.astype(dtype)
    np.copyto(out, x, casting="unsafe")  # the same conversion as astype
    return out
