"""Fold fine-tuned adapters into ONNX models, and prove the result with onnxruntime — without torch.

>>> from peftref.export import fold
>>> report = fold("model.onnx", "my-adapter/", "merged.onnx")        # doctest: +SKIP
>>> report.verification["max_rel_error"], report.verification["adapter_effect"]  # doctest: +SKIP

- :func:`fold` — base ONNX model + adapter (a :class:`peftref.adapter.Adapter` or a PEFT / peftref directory) → merged
  ONNX model, written atomically, verified with onnxruntime; returns a :class:`FoldReport`.
- :func:`linear_layers` — ``{module: (d_out, d_in)}`` of the linear layers an exported graph names (also renamed ones).
- :func:`random_inputs`, :func:`verify` — the verification pieces (:mod:`peftref.export.verification`).
- :func:`from_torch` — merge a peftref.torch or PEFT model and export it with ``torch.onnx.export``, verified against the
  torch model (needs torch; :mod:`peftref.export.torch_export`).

How weights are found in exported graphs: :mod:`peftref.export.graph`; the fold and its safety rules: :mod:`peftref.export.folding`.
"""

from .folding import FoldReport, LayerReport, fold
from .graph import linear_layers
from .tensors import ExportError
from .verification import Verification, random_inputs, verify


def __getattr__(name: str):
    """``from_torch`` is imported on first use: the rest of peftref.export needs no torch."""
    if name == "from_torch":
        from .torch_export import from_torch

        return from_torch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["fold", "FoldReport", "LayerReport", "linear_layers", "random_inputs", "verify", "Verification", "from_torch", "ExportError"]
