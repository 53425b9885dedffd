r"""Proof that a folded model computes what the adapted model computes: the onnx checker, then onnxruntime.

The reference is the *base* graph with the adapter applied **unmerged, in activation space**: after every adapted
MatMul/Gemm (computing y = x B' with B' = Wᵀ) a branch adds

    y ← y + s · x ΔWᵀ        (ΔWᵀ ∈ R^{d_in × d_out} a new initializer, s a scalar graph input)

so the base weights are never touched and the reference does not depend on how the fold reads or writes the stored
layout. A fold that wrote W + ΔW where the graph expects Wᵀ + ΔWᵀ (or the reverse) computes x (W + ΔWᵀ)… instead and
differs from the reference by about x (ΔW − ΔWᵀ): it is caught whenever ΔW is not symmetric. Running the reference once
with s = 1 and once with s = 0 (the base model) also measures the **adapter effect**, max |adapted − base|: a check is
conclusive only when the effect is well above the error (a LoRA with B = 0 changes nothing and proves nothing).

Inputs are random, built from the graph's input specs: token ids in the vocabulary of the embedding they index (found by
following the input to a ``Gather``), an attention mask of ones, token type ids of zeros, position ids 0 … L−1, floats
from N(0, 1); symbolic dimensions get batch 2 and length 8 unless ``inputs`` are given.

Errors are reported as max |folded − reference| and the same divided by max |reference| (the output's scale); the check
passes when the relative error is within the tolerance of the output's dtype (:data:`TOLERANCE`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .folding import PROTOBUF_LIMIT, Plan, apply_changes, insert_after, set_inline
from .graph import attribute
from .tensors import FLOAT_TYPES, ExportError, round_to_dtype

#: relative error (max |folded − reference| / max |reference|) allowed per dtype, of the output or of the coarsest adapted
#: weight, whichever is larger. The two sides round the same math differently (W + ΔW rounded once to the weight's dtype
#: vs W and ΔW kept apart): float32 agrees to ~1e-6 on 6-layer transformers; float16 weights (unit roundoff 4.9e-4) and
#: bfloat16 weights (3.9e-3) to a few unit roundoffs after a few layers.
TOLERANCE = {
    TensorProto.DOUBLE: 1e-10,
    TensorProto.FLOAT: 1e-4,
    TensorProto.FLOAT16: 5e-3,
    TensorProto.BFLOAT16: 3e-2,
}
SCALE_INPUT = "peftref.delta_scale"
#: ops an index input may pass through before the Gather that bounds it.
INDEX_OPS = ("Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand")


@dataclass
class OutputError:
    name: str
    max_abs_error: float
    max_rel_error: float  # max |folded − reference| / max |reference|
    adapter_effect: float  # max |adapted − base| / max |reference|
    tolerance: float


@dataclass
class Verification:
    """What :func:`verify` measured; ``passed`` when every output is within its tolerance."""

    checker: str
    provider: str
    inputs: dict[str, list[int]]
    outputs: list[OutputError]
    max_abs_error: float
    max_rel_error: float
    adapter_effect: float
    passed: bool
    conclusive: bool  # the adapter effect exceeds 10× the tolerance: a layout bug could not hide below it
    expected: list[dict] = field(default_factory=list)  # folded vs given expected outputs (e.g. the adapted torch model)

    def to_dict(self) -> dict:
        return asdict(self)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("the verification needs onnxruntime (pip install onnxruntime, or onnxruntime-gpu); or fold with verify=False (--no-verify)") from None
    return onnxruntime


def providers() -> list[str]:
    """CUDA when onnxruntime-gpu and a GPU are there, else CPU."""
    available = _onnxruntime().get_available_providers()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available else ["CPUExecutionProvider"]


def session(model: str | Path | bytes, external_dir: Path | None = None):
    """An onnxruntime session on `model` (a path, or bytes whose external data lives in `external_dir`)."""
    onnxruntime = _onnxruntime()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if external_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_dir.resolve()))
    try:
        return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers())
    except Exception as err:  # onnxruntime raises its own exception types (Fail, NotImplemented, InvalidGraph, ...)
        raise ExportError(f"onnxruntime cannot run the model ({str(err).splitlines()[0]}); fold with verify=False (--no-verify) to skip the check") from None


def _index_bound(graph: onnx.GraphProto, name: str, initializers: dict) -> int | None:
    """The size of the smallest table the integer input `name` indexes with a Gather (its vocabulary), if any."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for value in node.input:
            consumers.setdefault(value, []).append(node)
    bounds, todo, seen = [], deque([name]), {name}
    while todo:
        value = todo.popleft()
        for node in consumers.get(value, []):
            if node.op_type == "Gather" and node.input[1] == value and node.input[0] in initializers:
                axis = attribute(node, "axis", 0)
                bounds.append(initializers[node.input[0]].dims[axis])
            elif node.op_type in INDEX_OPS and node.input[0] == value:
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        todo.append(out)
    return min(bounds) if bounds else None


def random_inputs(model: onnx.ModelProto, seed: int = 0, batch: int = 2, length: int = 8) -> dict[str, np.ndarray]:
    """Random inputs for every graph input: in-vocabulary token ids, a mask of ones, zeros for token types, N(0, 1) floats."""
    rng = np.random.default_rng(seed)
    initializers = {t.name: t for t in model.graph.initializer}
    symbols: dict[str, int] = {}
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = []
        for k, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                shape.append(dim.dim_value)
            else:
                shape.append(symbols.setdefault(dim.dim_param or f"{value.name}:{k}", batch if k == 0 else length))
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        name = value.name.lower()
        if dtype == np.bool_:
            feeds[value.name] = np.ones(shape, dtype)
        elif np.issubdtype(dtype, np.integer):
            if "mask" in name:
                feeds[value.name] = np.ones(shape, dtype)
            elif "token_type" in name or "segment" in name:
                feeds[value.name] = np.zeros(shape, dtype)
            elif "position" in name:
                feeds[value.name] = np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
            else:
                bound = _index_bound(model.graph, value.name, initializers) or 2
                feeds[value.name] = rng.integers(0, bound, size=shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def reference_model(result: Plan) -> onnx.ModelProto:
    """The base model with saved modules replaced and, after each adapted MatMul/Gemm, y ← y + s · x ΔWᵀ (s = SCALE_INPUT)."""
    graph = result.graph
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    saved = [c for c in result.changes if c.report is None]
    after = apply_changes(model, graph, saved)
    by_name = {t.name: t for t in model.graph.initializer}
    for change in saved:
        set_inline(by_name[change.target], change.values())
    model.graph.input.append(helper.make_tensor_value_info(SCALE_INPUT, TensorProto.FLOAT, []))
    scales = {TensorProto.FLOAT: SCALE_INPUT}
    head = []  # nodes to run first: the casts of s
    for module, found in result.located.items():
        layer = result.adapter.layers[module]
        for k, use in enumerate(found.uses):
            dW = layer.delta_weight(graph.weight(use))  # (d_out, d_in) float64
            data_type = graph.compute_type(use)
            if data_type not in scales:
                scales[data_type] = f"{SCALE_INPUT}.{data_type}"
                head.append(helper.make_node("Cast", [SCALE_INPUT], [scales[data_type]], to=data_type))
            prefix = f"peftref.{module}.{k}"
            delta = numpy_helper.from_array(np.ascontiguousarray(round_to_dtype(dW.T, FLOAT_TYPES[data_type])), f"{prefix}.delta_T")  # (d_in, d_out)
            model.graph.initializer.append(delta)
            node = model.graph.node[use.node]
            x, y = node.input[0], node.output[0]
            node.output[0] = f"{prefix}.base"
            after[use.node] += [
                helper.make_node("MatMul", [x, delta.name], [f"{prefix}.x_dW_T"]),  # (..., d_in) @ (d_in, d_out)
                helper.make_node("Mul", [f"{prefix}.x_dW_T", scales[data_type]], [f"{prefix}.scaled"]),
                helper.make_node("Add", [f"{prefix}.base", f"{prefix}.scaled"], [y]),
            ]
    insert_after(model, after, head)
    return model


def compare(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max |actual − expected|, the same / max |expected|), in float64."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise ExportError(f"output shapes differ: {a.shape} vs {e.shape}")
    if a.size == 0:
        return 0.0, 0.0
    error = float(np.abs(a - e).max())
    scale = float(np.abs(e).max())
    return error, error / scale if scale > 0 else error


def verify(result: Plan, folded: Path, *, inputs: dict | None = None, tolerance: float | None = None, expected=None) -> Verification:
    """Check the folded model with the onnx checker and compare it with the reference on onnxruntime.

    expected: optional outputs of the adapted model itself (e.g. the PEFT torch model on the same `inputs`), compared too.
    A failure raises ExportError with the figures.
    """
    try:
        onnx.checker.check_model(str(folded))
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the onnx checker rejects the folded model: {str(err).splitlines()[0]}") from None
    graph = result.graph
    feeds = dict(inputs) if inputs is not None else random_inputs(graph.model)
    reference = reference_model(result).SerializeToString()
    if len(reference) > PROTOBUF_LIMIT:
        raise ExportError("the verification model (base + inline adapter deltas) exceeds 2 GiB; fold with verify=False (--no-verify)")
    folded_session = session(folded)
    reference_session = session(reference, graph.base_dir if graph.path else None)
    outputs = [o.name for o in folded_session.get_outputs()]
    got = folded_session.run(outputs, feeds)
    adapted = reference_session.run(outputs, {**feeds, SCALE_INPUT: np.array(1.0, np.float32)})
    base = reference_session.run(outputs, {**feeds, SCALE_INPUT: np.array(0.0, np.float32)})
    types = {o.name: o.type.tensor_type.elem_type for o in graph.model.graph.output}
    weights = max((TOLERANCE[graph.initializers[c.source].data_type] for c in result.changes if c.report), default=0.0)
    errors = []
    for name, a, r, b in zip(outputs, got, adapted, base):
        max_abs, max_rel = compare(a, r)
        effect = compare(b, r)[1]
        allowed = tolerance if tolerance is not None else max(TOLERANCE.get(types.get(name), 0.0), weights)
        errors.append(OutputError(name, max_abs, max_rel, effect, allowed))
    report = Verification(
        checker="passed",
        provider=folded_session.get_providers()[0],
        inputs={k: list(np.shape(v)) for k, v in feeds.items()},
        outputs=errors,
        max_abs_error=max(e.max_abs_error for e in errors),
        max_rel_error=max(e.max_rel_error for e in errors),
        adapter_effect=max(e.adapter_effect for e in errors),
        passed=all(e.max_rel_error <= e.tolerance for e in errors),
        conclusive=any(e.adapter_effect > 10 * e.tolerance for e in errors),
    )
    if expected is not None:
        for name, a, e in zip(outputs, got, expected):
            max_abs, max_rel = compare(a, e)
            report.expected.append({"name": name, "max_abs_error": max_abs, "max_rel_error": max_rel})
    if not report.passed:
        worst = max(errors, key=lambda e: e.max_rel_error / max(e.tolerance, 1e-300))
        raise ExportError(
            f"verification failed: output {worst.name!r} differs from the base model plus the unmerged adapter by "
            f"{worst.max_abs_error:.3g} (relative {worst.max_rel_error:.3g} > tolerance {worst.tolerance:.0e}); "
            f"the adapter itself changes it by {worst.adapter_effect:.3g}"
        )
    return report
