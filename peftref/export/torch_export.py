r"""From a fine-tuned torch model to a merged, verified ONNX file: merge on a copy, ``torch.onnx.export``, onnxruntime.

    from_torch(model, example_inputs, "model.onnx")
      1. expected = model(*example_inputs)                       (the adapted model, unmerged, eval mode)
      2. merged = merge(deepcopy(model))                         (peftref.torch.merge + unload, or PEFT merge_and_unload)
      3. torch.onnx.export(merged, example_inputs, ...)          (dynamo by default; dynamo=False for TorchScript)
      4. onnxruntime(model.onnx)(example_inputs) ≈ expected      (max abs and relative error, per output)

The caller's model is never modified. Files are exported into a temporary directory beside `path` and renamed into
place only after verification passed: on any error nothing is left behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .tensors import ExportError
from .verification import TOLERANCE, compare, session

_TORCH_TO_ONNX_TYPES = {torch.float32: 1, torch.float16: 10, torch.bfloat16: 16, torch.float64: 11}


def merged_copy(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """A merged copy of `model` without adapter modules, and how it was merged ("peft", "peftref" or "none")."""
    import peftref.torch as pt

    merged = copy.deepcopy(model)
    if any(True for _ in pt.adapted_layers(merged)):
        return pt.unload(pt.merge(merged)), "peftref"
    if callable(getattr(merged, "merge_and_unload", None)):
        return merged.merge_and_unload(), "peft"
    return merged, "none"


def _as_args(example_inputs) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    return tuple(example_inputs), {}


def _leaves(output) -> list[torch.Tensor]:
    """The tensors of a model output (tensor, tuple, dict or ModelOutput), in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for value in output.values() for t in _leaves(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in _leaves(value)]
    return []


def from_torch(
    model: torch.nn.Module,
    example_inputs,
    path,
    *,
    dynamo: bool = True,
    verify: bool = True,
    tolerance: float | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    **export_options,
) -> dict:
    """Merge `model`'s adapters on a copy, export it to `path` with ``torch.onnx.export`` and verify it with onnxruntime.

    model: a model with peftref.torch adapters (:func:`peftref.torch.inject`), a PEFT ``PeftModel``, or a plain model.
    example_inputs: a tensor, a tuple of positional tensors, or a dict of keyword tensors; also the verification inputs.
    dynamo: torch's default exporter (True) or the TorchScript one (False). Other keyword arguments go to
    ``torch.onnx.export`` (``dynamic_shapes``, ``opset_version``, ...). Returns a report dict with the errors per output.
    """
    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        raise ExportError(f"output {path}: expected a file name in an existing directory")
    args, kwargs = _as_args(example_inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = [t.detach().cpu() for t in _leaves(model(*args, **kwargs))]
        merged, merged_by = merged_copy(model)
    finally:
        model.train(was_training)
    merged.eval()
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        exported = staging / path.name
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporters print progress lines
            torch.onnx.export(
                merged, args, exported, kwargs=kwargs or None, dynamo=dynamo,
                input_names=input_names, output_names=output_names, **export_options,
            )  # fmt: skip
        report = {"output": str(path), "exporter": "dynamo" if dynamo else "torchscript", "merged_by": merged_by, "outputs": []}
        if verify:
            report["outputs"] = _verify(exported, args, kwargs, expected, tolerance)
        for file in sorted(staging.iterdir()):
            os.replace(file, path.parent / file.name)
    except Exception as err:
        if isinstance(err, ExportError):
            raise
        raise ExportError(f"export of {type(model).__name__} to {path} failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _verify(exported: Path, args: tuple, kwargs: dict, expected: list[torch.Tensor], tolerance: float | None) -> list[dict]:
    """onnxruntime's outputs on the example inputs against the adapted torch model's; an ExportError when any differs."""
    ort_session = session(exported)
    positional = iter(args)
    feeds = {}
    for graph_input in ort_session.get_inputs():  # keyword inputs by name, the others in order
        value = kwargs[graph_input.name] if graph_input.name in kwargs else next(positional, None)
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"cannot match the exported model's input {graph_input.name!r} to an example input")
        feeds[graph_input.name] = value.detach().cpu().numpy()
    got = ort_session.run(None, feeds)
    if len(got) != len(expected):
        raise ExportError(f"the exported model has {len(got)} outputs, the torch model {len(expected)}")
    results = []
    for output, actual, reference in zip(ort_session.get_outputs(), got, expected):
        max_abs, max_rel = compare(actual, reference.to(torch.float64).numpy())
        allowed = tolerance if tolerance is not None else TOLERANCE.get(_TORCH_TO_ONNX_TYPES.get(reference.dtype), 0.0)
        results.append({"name": output.name, "max_abs_error": max_abs, "max_rel_error": max_rel, "tolerance": allowed})
        if max_rel > allowed:
            raise ExportError(
                f"verification failed: onnxruntime's output {output.name!r} differs from the torch model's by {max_abs:.3g} "
                f"(relative {max_rel:.3g} > tolerance {allowed:.0e})"
            )
    return results
