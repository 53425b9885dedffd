"""Bad input, one test each: a clear ExportError naming the file, module or tensor — and no output file, no temporary
left in the output directory (its listing is unchanged)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from export_cases import layer_adapter, listing, mlp_adapter, mlp_layers, save
from onnx import helper, numpy_helper

import peftref.export.folding as fold_module
from peftref.adapter import Adapter
from peftref.export import fold
from peftref.export.models import mlp_model
from peftref.export.tensors import ExportError


@pytest.fixture
def base(tmp_path):
    """A 3-layer MLP in the constant-folded form (weights renamed val_i, stored transposed), external data beside it."""
    layers = mlp_layers()
    return save(mlp_model(layers, form="matmul", sequence=True), tmp_path / "base.onnx", external=True), layers


def _fails(tmp_path, match: str, *args, **kwargs):
    before = listing(tmp_path)
    with pytest.raises(ExportError, match=match):
        fold(*args, progress=False, **kwargs)
    assert listing(tmp_path) == before


def test_missing_module(tmp_path, base):
    path, layers = base
    adapter = mlp_adapter("lora", layers)
    adapter.layers["layers.9"] = adapter.layers.pop("layers.2")
    _fails(tmp_path, r"adapter module 'layers.9' not found: no linear layer of that name", path, adapter, tmp_path / "out.onnx")


def test_wrong_shape(tmp_path, base):
    path, layers = base
    rng = np.random.default_rng(0)
    adapter = Adapter({"layers.0": layer_adapter("lora", "layers.0", np.ones((16, 16)), rng)})  # the graph's is (16, 24)
    _fails(tmp_path, r"'layers.0' expects a weight of shape \(d_out, d_in\) = \(16, 16\), .* 'val_0' as a weight of shape \(16, 24\)", path, adapter, tmp_path / "out.onnx")


def test_ambiguous_module_name(tmp_path):
    layers = mlp_layers(shapes=[(16, 24), (16, 16)])
    path = save(mlp_model(layers, form="gemm", modules=["encoder.proj", "decoder.proj"]), tmp_path / "base.onnx")
    adapter = Adapter({"proj": layer_adapter("lora", "proj", layers[0][0], np.random.default_rng(0))})
    _fails(tmp_path, r"module 'proj' is ambiguous .* \['decoder.proj', 'encoder.proj'\]", path, adapter, tmp_path / "out.onnx")


def test_output_is_the_input(tmp_path, base):
    path, layers = base
    _fails(tmp_path, r"output .*base.onnx is the input file", path, mlp_adapter("lora", layers), path)


def test_output_is_the_input_through_a_symlink(tmp_path, base):
    path, layers = base
    os.symlink(path, tmp_path / "link.onnx")
    _fails(tmp_path, r"output .*link.onnx is the input file", path, mlp_adapter("lora", layers), tmp_path / "link.onnx")


def test_output_data_file_is_the_inputs(tmp_path):
    """base.onnx keeps its tensors in out.onnx.data: writing out.onnx would overwrite them."""
    layers = mlp_layers()
    model = mlp_model(layers, form="matmul", sequence=True)
    onnx.save(model, tmp_path / "base.onnx", save_as_external_data=True, location="out.onnx.data", size_threshold=0)
    _fails(tmp_path, r"output .*out.onnx.data is the input file", tmp_path / "base.onnx", mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_output_directory_missing(tmp_path, base):
    path, layers = base
    _fails(tmp_path, r"output directory .*nowhere does not exist", path, mlp_adapter("lora", layers), tmp_path / "nowhere" / "out.onnx")


def test_output_directory_is_a_file(tmp_path, base):
    path, layers = base
    (tmp_path / "file").write_text("x")
    _fails(tmp_path, r"output directory .*file is not a directory", path, mlp_adapter("lora", layers), tmp_path / "file" / "out.onnx")


def test_output_directory_unwritable(tmp_path, base):
    """/proc refuses new files even to root (the tests may run as root, for whom chmod does not protect a directory)."""
    path, layers = base
    _fails(tmp_path, r"cannot write to /proc", path, mlp_adapter("lora", layers), "/proc/out.onnx")


def test_output_is_a_directory(tmp_path, base):
    path, layers = base
    (tmp_path / "dir.onnx").mkdir()
    _fails(tmp_path, r"output .*dir.onnx is a directory", path, mlp_adapter("lora", layers), tmp_path / "dir.onnx")


def test_corrupt_onnx_file(tmp_path, base):
    path, layers = base
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xff\xff")
    _fails(tmp_path, r"corrupt.onnx: not a readable ONNX model", tmp_path / "corrupt.onnx", mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_truncated_onnx_file(tmp_path, base):
    path, layers = base
    data = save(mlp_model(layers), tmp_path / "whole.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    _fails(tmp_path, r"truncated.onnx: not a readable ONNX model", tmp_path / "truncated.onnx", mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_missing_onnx_file(tmp_path, base):
    path, layers = base
    _fails(tmp_path, r"absent.onnx: ONNX model not found", tmp_path / "absent.onnx", mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_truncated_external_data(tmp_path, base):
    path, layers = base
    data = tmp_path / "base.onnx.data"
    data.write_bytes(data.read_bytes()[:-100])
    _fails(tmp_path, r"runs past the end of .*base.onnx.data .*truncated", path, mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_non_finite_merged_weight_overflows_float32(tmp_path, base):
    path, layers = base
    adapter = mlp_adapter("lora", layers)
    layer = adapter.layers["layers.1"]
    layer.params["A"][:] = 1e20
    layer.params["B"][:] = 1e20  # ΔW = s B A ~ 1e41: finite in float64, beyond float32
    _fails(tmp_path, r"module 'layers.1' \(lora\): the merged weight \(initializer 'val_1'\) is not finite: W \+ ΔW reaches .*e\+4\d, beyond float32's largest", path, adapter, tmp_path / "out.onnx")


def test_non_finite_merged_weight_overflows_float16(tmp_path):
    layers = mlp_layers()
    path = save(mlp_model(layers, form="matmul", sequence=True, dtype=np.float16), tmp_path / "base.onnx")
    adapter = mlp_adapter("bone", layers)
    adapter.layers["layers.2"].params["D"][0, 0] = 1e5  # float16's largest value is 65504
    _fails(tmp_path, r"module 'layers.2' \(bone\): .* beyond float16's largest value 6.55e\+04", path, adapter, tmp_path / "out.onnx")


def test_nan_in_adapter_parameters(tmp_path, base):
    path, layers = base
    adapter = mlp_adapter("fourierft", layers)
    adapter.layers["layers.0"].params["spectrum"][3] = np.nan
    _fails(tmp_path, r"module 'layers.0' \(fourierft\): fourierft: parameter 'spectrum' contains non-finite values", path, adapter, tmp_path / "out.onnx")


def test_empty_adapter(tmp_path, base):
    path, _ = base
    _fails(tmp_path, r"has no layers and no modules to save", path, Adapter({}, source="empty"), tmp_path / "out.onnx")


def test_weight_behind_a_shared_transpose_is_refused(tmp_path):
    """One Transpose feeds the MatMuls of two modules: a copy of the initializer would change both, so the fold refuses."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["a.weight"], ["t"], name="/a/Transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "t"], ["h"], name="/a/MatMul"),
        helper.make_node("MatMul", ["h", "t"], ["y"], name="/b/MatMul"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", 1, [2, 8])], [helper.make_tensor_value_info("y", 1, [2, 8])],
        [numpy_helper.from_array(W, "a.weight")],
    )  # fmt: skip
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "base.onnx")
    adapter = Adapter({"a": layer_adapter("lora", "a", W.astype(np.float64), rng)})
    _fails(tmp_path, r"module 'a': its weight 'a.weight' passes through Transpose node '/a/Transpose', whose output is also read by \[\"MatMul node '/b/MatMul'\"\]", path, adapter, tmp_path / "out.onnx")


def test_two_adapter_names_for_one_graph_module(tmp_path, base):
    path, layers = base
    rng = np.random.default_rng(0)
    adapter = Adapter({m: layer_adapter("lora", m, layers[0][0], rng) for m in ("layers.0", "model.layers.0")})
    _fails(tmp_path, r"adapter modules 'layers.0' and 'model.layers.0' both name the weight of MatMul node 'node_MatMul_0'", path, adapter, tmp_path / "out.onnx")


def test_saved_module_not_in_graph(tmp_path, base):
    path, layers = base
    adapter = mlp_adapter("lora", layers, modules=[0])
    adapter.modules_to_save = {"classifier": {"weight": np.ones((3, 8)), "bias": np.ones(3)}}
    _fails(tmp_path, r"saved module 'classifier': no tensor for its weight \(shape \(3, 8\)\) found in the graph", path, adapter, tmp_path / "out.onnx")


def test_verification_catches_a_transposed_write(tmp_path, base, monkeypatch):
    """A fold that wrote W + ΔW where the graph stores Wᵀ (a layout bug) is caught by the verification: not written."""
    path, layers = base
    correct = fold_module.merged_weight

    def transposed(graph, located, layer, initializer, out=None, precision="float32"):
        merged = correct(graph, located, layer, initializer, precision=precision)
        wrong = merged.T if merged.shape[0] == merged.shape[1] else merged
        if out is None:
            return np.ascontiguousarray(wrong)
        out.put(wrong)
        return None

    monkeypatch.setattr(fold_module, "merged_weight", transposed)
    _fails(tmp_path, r"verification failed: output 'y' differs from the base model plus the unmerged adapter", path, mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_model_proto_with_external_references(tmp_path, base):
    path, layers = base
    proto = onnx.load(path, load_external_data=False)
    _fails(tmp_path, r"a ModelProto base must have its external data loaded", proto, mlp_adapter("lora", layers), tmp_path / "out.onnx")


def test_adapter_directory_missing(tmp_path, base):
    path, _ = base
    from peftref.checkpoints import CheckpointError

    before = listing(tmp_path)
    with pytest.raises(CheckpointError, match=r"no-adapter: not an adapter directory"):
        fold(path, tmp_path / "no-adapter", tmp_path / "out.onnx", progress=False)
    assert listing(tmp_path) == before


def test_unknown_precision(tmp_path, base):
    path, layers = base
    _fails(tmp_path, r"precision must be one of float32, float64, got 'float16'", path, mlp_adapter("lora", layers), tmp_path / "out.onnx", precision="float16")


def test_float32_overflow_of_delta_alone_is_redone_in_float64(tmp_path):
    """Regression: W = −3e38 and ΔW = 6e38 (beyond float32) merge to 3e38, which float32 holds. The float32 product
    overflows; the fold must redo that weight in float64 instead of calling the merged weight non-finite."""
    layers = [(np.full((4, 3), -3e38), None)]
    path = save(mlp_model(layers, form="gemm"), tmp_path / "base.onnx")
    adapter = mlp_adapter("lora", layers)
    lora = adapter.layers["layers.0"]
    lora.params["A"][:] = 1.0
    lora.params["B"][:] = 6e38 / (lora.config.scaling * lora.params["A"].shape[0])  # ΔW = s B A = 6e38 everywhere
    fast = fold(path, adapter, tmp_path / "fast.onnx", verify=False, progress=False)
    exact = fold(path, adapter, tmp_path / "exact.onnx", verify=False, precision="float64", progress=False)
    (name,) = fast.layers[0].initializers
    merged = numpy_helper.to_array(next(t for t in onnx.load(tmp_path / "fast.onnx").graph.initializer if t.name == name))
    np.testing.assert_array_equal(merged, numpy_helper.to_array(next(t for t in onnx.load(tmp_path / "exact.onnx").graph.initializer if t.name == name)))
    np.testing.assert_allclose(merged, 3e38, rtol=1e-6)
