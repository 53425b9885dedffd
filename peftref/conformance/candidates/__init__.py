"""The shipped candidates, and resolving ``--impl`` to a candidate object.

``reference`` (peftref.refimpl), ``torch`` (peftref.torch: CUDA when available, else CPU; ``torch-cpu`` / ``torch-cuda`` to
choose), ``peft`` (Hugging Face PEFT's own layers: LoRA, FourierFT, MiSS/Bone, Bat), or ``package.module:object`` for any
importable object; a class is instantiated without arguments.
"""

from __future__ import annotations

import importlib

from ..protocol import CANDIDATE_OPERATIONS

#: name -> (module, class, keyword arguments)
BUILTIN = {
    "reference": ("peftref.conformance.candidates.reference", "ReferenceCandidate", {}),
    "torch": ("peftref.conformance.candidates.peftref_torch", "TorchCandidate", {}),
    "torch-cpu": ("peftref.conformance.candidates.peftref_torch", "TorchCandidate", {"device": "cpu"}),
    "torch-cuda": ("peftref.conformance.candidates.peftref_torch", "TorchCandidate", {"device": "cuda"}),
    "peft": ("peftref.conformance.candidates.hf_peft", "PeftCandidate", {}),
}


def load(impl: str):
    """The candidate object named by `impl` (a built-in name or ``package.module:object``)."""
    if impl in BUILTIN:
        module_name, class_name, kwargs = BUILTIN[impl]
        return getattr(importlib.import_module(module_name), class_name)(**kwargs)
    module_name, colon, attribute = impl.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"--impl {impl!r}: expected one of {', '.join(BUILTIN)} or package.module:object")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:  # the user's module may fail in any way; report it in one line
        raise ValueError(f"--impl {impl!r}: cannot import module {module_name!r}: {type(err).__name__}: {err}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--impl {impl!r}: module {module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        obj = obj()
    if not any(callable(getattr(obj, op, None)) for op in CANDIDATE_OPERATIONS):
        raise ValueError(f"--impl {impl!r}: the object has none of the candidate operations {', '.join(CANDIDATE_OPERATIONS)}")
    return obj
