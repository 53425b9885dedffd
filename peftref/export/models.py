r"""Small ONNX models built directly with ``onnx.helper`` (no torch): a stack of linear layers in any exported form.

    h_0 = x,   h_{i+1} = act(h_i W_iᵀ + b_i),   module i is named ``layers.i``

``form`` reproduces what torch's exporters write for a ``Linear`` (see :mod:`peftref.export.graph`):

- ``"gemm"``: ``Gemm(h, W, b, transB=1)`` on ``layers.i.weight`` = W — 2-D input;
- ``"matmul"``: ``MatMul(h, Wᵀ)`` on a renamed, transposed initializer ``val_i`` = Wᵀ, then ``Add(b)`` — the
  constant-folded form; the module is known only from dynamo-style ``name_scopes`` metadata (or not at all with
  ``scopes=False``);
- ``"transpose"``: ``MatMul(h, Transpose(W))`` on ``layers.i.weight`` — the unfolded form.

Weights are stored in ``dtype`` (float32, float16 or bfloat16); with ``cast=True`` they are stored in ``dtype`` and cast to
float32 before the product (fp16/bf16 storage with float32 compute, which onnxruntime's CPU kernels support).
Used by the tests, the benchmark (a 1 GB model) and ``peftref demo``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .graph import NAME_SCOPES
from .tensors import FLOAT_TYPES, round_to_dtype

FORMS = ("gemm", "matmul", "transpose")
OPSET = 17


def mlp_model(
    layers: Sequence[tuple[np.ndarray, np.ndarray | None]],
    *,
    form: str = "gemm",
    dtype=np.float32,
    cast: bool = False,
    activation: str | None = "Tanh",
    scopes: bool = True,
    sequence: bool = False,
    modules: Sequence[str] | None = None,
) -> onnx.ModelProto:
    """An MLP over `layers` [(W (d_out, d_in), b (d_out,) or None), ...]; input ``x`` (batch, [sequence,] d_in).

    `sequence` adds a middle dimension (3-D input, as a transformer's); "gemm" needs 2-D input. x and y are float32 when
    `cast`, else `dtype`. `modules` names the layers (default ``layers.0``, ``layers.1``, …).
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "gemm" and sequence:
        raise ValueError("form 'gemm' takes a 2-D input; use 'matmul' or 'transpose' with a sequence dimension")
    dtype = np.dtype(dtype)
    data_type = next(t for t, d in FLOAT_TYPES.items() if d == dtype)
    compute_type = TensorProto.FLOAT if cast else data_type
    nodes, initializers = [], []
    h = "x"
    for i, (W, b) in enumerate(layers):
        module = modules[i] if modules else f"layers.{i}"
        metadata = {NAME_SCOPES: repr(["", module, "linear"])} if scopes else {}
        stored = round_to_dtype(np.asarray(W, np.float64), dtype)  # (d_out, d_in)
        new_nodes = []
        if form == "matmul":
            weight = f"val_{i}"
            initializers.append(numpy_helper.from_array(np.ascontiguousarray(stored.T), weight))  # Wᵀ (d_in, d_out), as constant folding leaves it
        else:
            weight = f"{module}.weight"
            initializers.append(numpy_helper.from_array(stored, weight))  # W (d_out, d_in)
        if cast:
            new_nodes.append(helper.make_node("Cast", [weight], [f"{module}.weight_f32"], name=f"node_Cast_{i}", to=TensorProto.FLOAT))
            weight = f"{module}.weight_f32"
        if form == "transpose":
            new_nodes.append(helper.make_node("Transpose", [weight], [f"{module}.weight_T"], name=f"node_Transpose_{i}", perm=[1, 0]))
            weight = f"{module}.weight_T"
        bias = None
        if b is not None:
            bias = f"{module}.bias"
            initializers.append(numpy_helper.from_array(round_to_dtype(np.asarray(b, np.float64), np.dtype(helper.tensor_dtype_to_np_dtype(compute_type))), bias))
        out = f"{module}.out"
        if form == "gemm":
            new_nodes.append(helper.make_node("Gemm", [h, weight] + ([bias] if bias else []), [out], name=f"node_Gemm_{i}", transB=1))
        else:
            product = f"{module}.matmul" if bias else out
            new_nodes.append(helper.make_node("MatMul", [h, weight], [product], name=f"node_MatMul_{i}"))
            if bias:
                new_nodes.append(helper.make_node("Add", [product, bias], [out], name=f"node_Add_{i}"))
        h = out
        if activation and i < len(layers) - 1:
            new_nodes.append(helper.make_node(activation, [h], [f"{module}.act"], name=f"node_{activation}_{i}"))
            h = f"{module}.act"
        for node in new_nodes:
            helper.set_metadata_props(node, metadata)
        nodes.extend(new_nodes)
    d_in, d_out = np.shape(layers[0][0])[1], np.shape(layers[-1][0])[0]
    lead = ["batch"] + (["sequence"] if sequence else [])
    x = helper.make_tensor_value_info("x", compute_type, lead + [d_in])
    y = helper.make_tensor_value_info("y", compute_type, lead + [d_out])
    nodes.append(helper.make_node("Identity", [h], ["y"], name="node_output"))
    graph = helper.make_graph(nodes, "mlp", [x], [y], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="peftref")
