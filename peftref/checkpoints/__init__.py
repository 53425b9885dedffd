"""Adapter checkpoints without torch: read and write Hugging Face PEFT's formats and peftref's own.

>>> from peftref.checkpoints import read_adapter, write_adapter
>>> adapter = read_adapter("my-lora")                                    # doctest: +SKIP
>>> adapter = read_adapter("my-fourierft", base="model.onnx")            # doctest: +SKIP

- :func:`read_adapter` — a PEFT directory (LoRA, FourierFT, MiSS / Bone / Bat, legacy BONE) or a peftref one
  (any method; sDCTFT, DCFT and SVD re-scaling live only there) → a validated :class:`~peftref.adapter.Adapter`.
- :func:`write_adapter` — the reverse, atomically: PEFT's format where PEFT has the method, peftref's otherwise.
- :func:`base_shapes` — ``{module: stored weight shape}`` of a base model (ONNX, safetensors, or a mapping).
- :func:`resolve_module` — the module-name matching rule shared with the exporter (dot-boundary suffixes).

Formats: :mod:`peftref.checkpoints.peft_format` and :mod:`peftref.checkpoints.native_format`.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import __version__, refimpl
from ..adapter import Adapter, LayerAdapter
from . import native_format, peft_format
from ._files import CONFIG_NAME, PICKLE_NAME, WEIGHTS_NAME, CheckpointError, check_float, read_json, read_tensors, write_directory
from ._layers import build_layer
from .base import Base, BaseShapes, base_shapes, base_weight
from .matching import resolve_module

__all__ = [
    "read_adapter", "write_adapter", "base_shapes", "base_weight", "BaseShapes", "resolve_module", "CheckpointError",
    "FORMAT_VERSION", "WRITE_FORMATS",
]  # fmt: skip

FORMAT_VERSION = native_format.FORMAT_VERSION
WRITE_FORMATS = ("auto", "peft", "peftref")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def _pickle_error(directory: Path) -> CheckpointError:
    pickle, target = directory / PICKLE_NAME, directory / WEIGHTS_NAME
    return CheckpointError(
        f"{pickle}: only a pickled adapter_model.bin is here, and reading it safely needs torch "
        f"(torch.load(weights_only=True)), which this torch-free reader does not use; convert it once with: "
        f"python -c \"import torch; from safetensors.torch import save_file; "
        f"save_file({{k: v.contiguous() for k, v in torch.load('{pickle}', weights_only=True).items()}}, '{target}')\""
    )


def read_adapter(path, base: Base | None = None) -> Adapter:
    """Read and validate an adapter directory (adapter_config.json + adapter_model.safetensors).

    base: where layer shapes come from when the adapter alone does not fix them (FourierFT, MiSS/Bone, Bat in PEFT's
    format) and what they are checked against otherwise: an ONNX model, safetensors weights (a file, or a directory as
    ``save_pretrained`` writes it, sharded or not), or a mapping ``{module: weight shape as stored}``.
    Every problem raises :class:`CheckpointError` (a ValueError) naming the file, module and key.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not an adapter directory (expected a directory with {CONFIG_NAME} and {WEIGHTS_NAME})")
    cpath, wpath = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    config = read_json(cpath)
    peft_type = config.get("peft_type")
    if peft_type == native_format.PEFT_TYPE:
        reader = native_format.read
    elif peft_type in peft_format.PEFT_TYPES:
        reader = peft_format.read
    else:
        raise CheckpointError(
            f"{cpath}: field 'peft_type' = {peft_type!r}: expected one of {', '.join(peft_format.PEFT_TYPES)} (PEFT) "
            f"or {native_format.PEFT_TYPE!r} (peftref's own format)"
        )
    if not wpath.exists() and (directory / PICKLE_NAME).exists():
        raise _pickle_error(directory)
    shapes = None if base is None else base_shapes(base)
    return reader(directory, cpath, wpath, config, read_tensors(wpath), shapes, base)


def _validated(adapter: Adapter) -> str:
    """The adapter's one method, after checking every layer and module to save as the reader would."""
    if not isinstance(adapter, Adapter):
        raise CheckpointError(f"expected a peftref.adapter.Adapter, got {type(adapter).__name__}")
    if not adapter.layers:
        raise CheckpointError("the adapter has no layers")
    methods = {layer.method for layer in adapter.layers.values()}
    if len(methods) > 1:
        raise CheckpointError(f"one adapter file holds one method, but the layers use {sorted(methods)}")
    for module, layer in adapter.layers.items():
        if not isinstance(layer, LayerAdapter) or layer.module != module:
            raise CheckpointError(f"layers[{module!r}]: expected a LayerAdapter whose .module is {module!r}")
        if not isinstance(layer.config, refimpl.get(layer.method).Config):
            raise CheckpointError(f"module {module!r}: config must be a refimpl.{layer.method}.Config, got {type(layer.config).__name__}")
        build_layer("adapter", module, layer.method, layer.config, layer.shape, layer.params, {}, layer.fan_in_fan_out)
    for module, saved in adapter.modules_to_save.items():
        if module in adapter.layers:
            raise CheckpointError(f"module {module!r} is both adapted and in modules_to_save")
        if not isinstance(saved, dict) or not saved:
            raise CheckpointError(f"modules_to_save[{module!r}]: expected a non-empty dict tensor name -> array, got {saved!r}")
        for name, array in saved.items():
            check_float("adapter", f"modules_to_save {module!r}, tensor {name!r}", array)
    bad = sorted(m for m in [*adapter.layers, *adapter.modules_to_save] if not _MODULE_NAME.match(m))
    if bad:
        raise CheckpointError(f"module names must be dot-separated identifiers, got {bad}")
    return methods.pop()


def write_adapter(
    adapter: Adapter, path, *, base_model_name_or_path: str | None = None, format: str = "auto", overwrite: bool = False
) -> None:
    """Write `adapter` to the directory `path` atomically (a temporary directory renamed into place).

    format: "auto" (PEFT's for lora, fourierft, bone, bat — so ``PeftModel.from_pretrained`` loads it — and peftref's for
    sdctft, dcft, svd_rescale), "peft" (refuse methods PEFT lacks) or "peftref" (any method, bitwise round trip).
    `path` must not exist, or be an empty directory, unless overwrite=True.
    """
    if format not in WRITE_FORMATS:
        raise CheckpointError(f"format must be one of {WRITE_FORMATS}, got {format!r}")
    path = Path(path)
    try:
        method = _validated(adapter)
        use_peft = format == "peft" or (format == "auto" and method in peft_format.WRITABLE_METHODS)
        if use_peft and method not in peft_format.WRITABLE_METHODS:
            raise CheckpointError(f"PEFT has no format for {method}; write with format='peftref' (or 'auto')")
        module = peft_format if use_peft else native_format
        config, tensors = module.to_files(adapter, base_model_name_or_path)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: cannot write: {err}") from None
    metadata = {"format": "pt", "written_by": f"peftref {__version__}"}
    if not use_peft:
        metadata.update(format="peftref", peftref_format_version=str(FORMAT_VERSION))
    write_directory(path, config, tensors, metadata, overwrite)
