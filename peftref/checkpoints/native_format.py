"""peftref's own adapter format, version 1: the methods PEFT lacks (sDCTFT, DCFT, SVD re-scaling), or any method exactly.

The same two files as PEFT. ``adapter_config.json``::

    {
      "peft_type": "PEFTREF",
      "peftref_format_version": 1,
      "method": "sdctft",                         // one of refimpl.METHODS
      "base_model_name_or_path": null,
      "modules": {
        "encoder.layer.0.attention.self.query": {
          "shape": [384, 384],                    // (d_out, d_in), torch.nn.Linear layout
          "fan_in_fan_out": false,                // true: the base stores the weight transposed (GPT-2 Conv1D)
          "config": {"n": 1000, "alpha": 1.0, "seed": 0, "energy_fraction": 0.7, "bands": 3, "init": "zeros"}
        }
      },
      "modules_to_save": {"classifier": ["bias", "weight"]}
    }

``adapter_model.safetensors`` holds ``<module>.<param>`` for every parameter of the method, trainable and frozen, under
SPEC.md's names and in our (d_out, d_in) layout — e.g. ``….query.spectrum`` (n,) and ``….query.indices`` (2, n) int64 —
plus ``<module>.<tensor>`` for each ``modules_to_save`` tensor. Arrays keep their dtype, so a write/read round trip is
bitwise exact. The file's metadata says ``{"format": "peftref", "peftref_format_version": "1"}``. The config is
strict: unknown fields are errors, and a newer format version is refused rather than guessed at.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import refimpl
from ..adapter import Adapter
from ._files import CheckpointError, add_tensors, check_float
from ._layers import build_layer, make_config, resolve_shape
from .base import BaseShapes

PEFT_TYPE = "PEFTREF"
FORMAT_VERSION = 1
_TOP_FIELDS = ("peft_type", "peftref_format_version", "method", "base_model_name_or_path", "modules", "modules_to_save")
_MODULE_FIELDS = ("shape", "fan_in_fan_out", "config")


def _check_fields(path: Path, where: str, mapping, allowed: tuple, required: tuple) -> None:
    if not isinstance(mapping, dict):
        raise CheckpointError(f"{path}: {where}: expected an object, got {mapping!r}")
    unknown = sorted(set(mapping) - set(allowed))
    missing = [name for name in required if name not in mapping]
    if unknown or missing:
        raise CheckpointError(f"{path}: {where}: unknown fields {unknown}, missing fields {missing} (format version {FORMAT_VERSION})")


def _check_version(path: Path, version) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: field 'peftref_format_version': expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: peftref format version {version} is newer than this peftref reads ({FORMAT_VERSION}); upgrade peftref"
        )


def _shape(path: Path, module: str, value) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(type(s) is int and s > 0 for s in value)):
        raise CheckpointError(f"{path}: module {module!r}: field 'shape': expected [d_out, d_in] (positive integers), got {value!r}")
    return value[0], value[1]


def read(directory: Path, cpath: Path, wpath: Path, config: dict, tensors: dict, shapes: BaseShapes | None, base) -> Adapter:
    """An Adapter from a peftref-format directory (config already parsed, tensors loaded)."""
    _check_fields(cpath, "adapter config", config, _TOP_FIELDS, ("peftref_format_version", "method", "modules"))
    _check_version(cpath, config["peftref_format_version"])
    method = config["method"]
    if method not in refimpl.METHODS:
        raise CheckpointError(f"{cpath}: field 'method': expected one of {', '.join(refimpl.METHODS)}, got {method!r}")
    modules, names = config["modules"], refimpl.get(method).TRAINABLE + refimpl.get(method).FROZEN
    if not isinstance(modules, dict) or not modules:
        raise CheckpointError(f"{cpath}: field 'modules': expected a non-empty object module -> entry, got {modules!r}")
    unused = set(tensors)
    layers = {}
    for module, entry in sorted(modules.items()):
        _check_fields(cpath, f"module {module!r}", entry, _MODULE_FIELDS, _MODULE_FIELDS)
        if not isinstance(entry["fan_in_fan_out"], bool):
            got = entry["fan_in_fan_out"]
            raise CheckpointError(f"{cpath}: module {module!r}: field 'fan_in_fan_out': expected true or false, got {got!r}")
        if not isinstance(entry["config"], dict):
            raise CheckpointError(f"{cpath}: module {module!r}: field 'config': expected an object, got {entry['config']!r}")
        cfg = make_config(cpath, module, method, entry["config"])
        shape = resolve_shape(cpath, module, _shape(cpath, module, entry["shape"]), shapes, base, entry["fan_in_fan_out"])
        keys = {name: f"{module}.{name}" for name in names}
        arrays = {name: tensors[key] for name, key in keys.items() if key in tensors}
        layers[module] = build_layer(wpath, module, method, cfg, shape, arrays, keys, entry["fan_in_fan_out"])
        unused -= set(keys.values())
    saved, to_save = {}, config.get("modules_to_save") or {}
    if not isinstance(to_save, dict):
        raise CheckpointError(f"{cpath}: field 'modules_to_save': expected an object module -> [tensor names], got {to_save!r}")
    for module, names_saved in sorted(to_save.items()):
        if not isinstance(names_saved, list) or not names_saved:
            raise CheckpointError(f"{cpath}: modules_to_save {module!r}: expected a non-empty list of tensor names, got {names_saved!r}")
        missing = [f"{module}.{name}" for name in names_saved if f"{module}.{name}" not in tensors]
        if missing:
            raise CheckpointError(f"{wpath}: modules_to_save {module!r}: missing keys {missing}")
        for name in names_saved:
            check_float(wpath, f"key {module + '.' + name!r}", tensors[f"{module}.{name}"])
        saved[module] = {name: tensors[f"{module}.{name}"] for name in names_saved}
        unused -= {f"{module}.{name}" for name in names_saved}
    if unused:
        raise CheckpointError(f"{wpath}: unexpected keys {sorted(unused)}: not named by {cpath}")
    return Adapter(layers, saved, peft_type=None, source=str(directory))


def to_files(adapter: Adapter, base_model_name_or_path: str | None) -> tuple[dict, dict]:
    """(adapter_config.json object, safetensors tensors) in peftref's format; the adapter is already validated."""
    layers = [adapter.layers[m] for m in sorted(adapter.layers)]
    config = {
        "peft_type": PEFT_TYPE,
        "peftref_format_version": FORMAT_VERSION,
        "method": layers[0].method,
        "base_model_name_or_path": base_model_name_or_path,
        "modules": {
            layer.module: {"shape": list(layer.shape), "fan_in_fan_out": layer.fan_in_fan_out, "config": dataclasses.asdict(layer.config)}
            for layer in layers
        },
        "modules_to_save": {module: sorted(saved) for module, saved in sorted(adapter.modules_to_save.items())},
    }
    tensors = {f"{layer.module}.{name}": array for layer in layers for name, array in layer.params.items()}
    for module, saved in adapter.modules_to_save.items():
        add_tensors(tensors, {f"{module}.{name}": array for name, array in saved.items()})
    return config, tensors
