"""Layer shapes (and, for plots, weights) of the base model an adapter belongs to, read without torch.

A base is one of:

- an ONNX model (``.onnx``): its initializers, read with ``onnx.load(..., load_external_data=False)`` so a model with
  gigabytes of external data costs only its graph;
- safetensors weights as ``save_pretrained`` writes them: a directory with ``model.safetensors``, or sharded with
  ``model.safetensors.index.json``, or one ``.safetensors`` file; only the headers are read;
- a mapping ``{module: (rows, cols)}``.

:func:`base_shapes` returns ``{module: shape of module.weight as stored}`` for every 2-D ``<module>.weight`` tensor. For
``torch.nn.Linear`` that is (d_out, d_in); GPT-2's ``Conv1D`` stores the transpose, (d_in, d_out): the adapter's
``fan_in_fan_out`` says which, and the reader swaps accordingly. A mapping is taken in the same stored layout.
For ONNX, weights the exporters renamed or transposed (a ``MatMul`` on ``val_12``) are found through the graph's module
scopes, by :meth:`peftref.export.graph.Graph.torch_shapes` — the same analysis the exporter folds with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from ._files import CheckpointError, read_json, read_tensor, tensor_shapes

#: module name -> shape (rows, cols) of its ``.weight`` as stored.
BaseShapes = dict[str, tuple[int, int]]
Base = Union[str, os.PathLike, Mapping[str, tuple[int, int]]]

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"


def describe_base(base: Base) -> str:
    """How error messages name a base."""
    return "the base shape mapping" if isinstance(base, Mapping) else f"base {os.fspath(base)}"


def _weight_module(key: str) -> str | None:
    return key[: -len(".weight")] if key.endswith(".weight") else None


def _safetensors_files(path: Path) -> list[Path]:
    """The weight files of a safetensors base: the file itself, the shards of an index, or model.safetensors."""
    if path.is_file():
        return [path]
    index = path / SAFETENSORS_INDEX_NAME
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: expected a non-empty 'weight_map' object (tensor name -> shard file)")
        return [path / shard for shard in sorted(set(weight_map.values()))]
    if (path / SAFETENSORS_NAME).is_file():
        return [path / SAFETENSORS_NAME]
    raise CheckpointError(f"{path}: no {SAFETENSORS_NAME} or {SAFETENSORS_INDEX_NAME} in this directory")


def _onnx_model(path: Path):
    import onnx

    try:
        return onnx.load(os.fspath(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends: any failure here means an unreadable file
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err})") from None


def _check_mapping(base: Mapping) -> BaseShapes:
    shapes = {}
    for module, shape in base.items():
        try:
            rows, cols = (int(s) for s in shape)
        except (TypeError, ValueError):
            raise CheckpointError(f"base shape mapping: module {module!r}: expected a pair (rows, cols), got {shape!r}") from None
        if rows < 1 or cols < 1:
            raise CheckpointError(f"base shape mapping: module {module!r}: expected positive sizes, got {(rows, cols)}")
        shapes[str(module)] = (rows, cols)
    return shapes


def base_shapes(base: Base) -> BaseShapes:
    """{module: stored shape of ``module.weight``} for every 2-D weight of `base` (ONNX, safetensors, or a mapping)."""
    if isinstance(base, Mapping):
        return _check_mapping(base)
    if not isinstance(base, (str, os.PathLike)):
        raise CheckpointError(f"base must be a path (ONNX model or safetensors weights) or a mapping, got {type(base).__name__}")
    path = Path(base)
    if not path.exists():
        raise CheckpointError(f"{path}: base model not found")
    if path.suffix == ".onnx":
        from ..export.graph import Graph

        model = _onnx_model(path)
        named = ((_weight_module(t.name), tuple(t.dims)) for t in model.graph.initializer)
        found = [*named, *Graph(model, path).torch_shapes().items()]  # + weights the exporters renamed or transposed
    else:
        found = ((_weight_module(key), shape) for file in _safetensors_files(path) for key, shape in tensor_shapes(file).items())
    shapes = {module: (int(shape[0]), int(shape[1])) for module, shape in found if module is not None and len(shape) == 2}
    if not shapes:
        raise CheckpointError(f"{path}: no 2-D '<module>.weight' tensors found in this base")
    return shapes


def base_weight(base: Base, module: str) -> np.ndarray:
    """The stored ``module.weight`` array of a file base (safetensors or ONNX, external data included)."""
    if isinstance(base, Mapping):
        raise CheckpointError(f"{describe_base(base)} has shapes only; the weight of {module!r} needs a safetensors or ONNX base")
    path, key = Path(base), f"{module}.weight"
    if path.suffix == ".onnx":
        from onnx import external_data_helper, numpy_helper

        for tensor in _onnx_model(path).graph.initializer:
            if tensor.name == key:
                if external_data_helper.uses_external_data(tensor):
                    external_data_helper.load_external_data_for_tensor(tensor, os.fspath(path.parent))
                return numpy_helper.to_array(tensor)
    else:
        for file in _safetensors_files(path):
            if key in tensor_shapes(file):
                return read_tensor(file, key)
    raise CheckpointError(f"{path}: no tensor {key!r} in this base")
