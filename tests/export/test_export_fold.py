"""fold() on MLPs built with onnx.helper, for every method and every way an exporter stores a Linear weight.

Two independent checks per case:
* the folded initializers equal the reference merge W + ΔW(W), computed in float64 from the stored weight and rounded once
  to the storage dtype — with ``precision="float64"`` bit for bit (the fold computes exactly that, so any difference is a
  defect); with the default ``precision="float32"`` within the error of float32 arithmetic (:func:`_float32_bound`);
* onnxruntime's output of the folded model equals the reference's *unmerged* forward (refimpl ``forward``, float64) of the
  adapted MLP. Tolerance 1e-5 relative to max |y|: float32 weights and activations through three 16–24 wide layers
  accumulate a few 1e-7; a layout or scale defect is O(ΔW) ≈ 1e-1 of the output.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from export_cases import CONFIGS, initializers, layer_adapter, listing, mlp_adapter, mlp_layers, reference_mlp, run, save

from peftref import refimpl
from peftref.adapter import Adapter
from peftref.export import fold
from peftref.export.models import mlp_model
from peftref.export.tensors import ExportError, round_to_dtype

FORMS = {"gemm": False, "matmul": True, "transpose": True}  # form -> 3-D input


def _x(sequence: bool, d_in: int = 24, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, 5, d_in) if sequence else (3, d_in)).astype(np.float32)


def _stored_layers(layers, dtype=np.float32):
    """The layers as the ONNX model stores them (rounded to dtype), back in float64: what the fold really reads."""
    return [(round_to_dtype(W, np.dtype(dtype)).astype(np.float64), None if b is None else b.astype(np.float32).astype(np.float64)) for W, b in layers]


def _float32_bound(W: np.ndarray, layer, dtype: np.dtype) -> np.ndarray:
    """Largest |fold − exact merge| with ``precision="float32"``, elementwise, (d_out, d_in).

    The fold rounds the factors (or the dense ΔW) to float32 (u = 2⁻²⁴ each), sums k products (γ_k ≈ k u), adds W and
    rounds the sum (u), then rounds once more to the storage dtype (its unit roundoff u_s, 0 for float32): to first order
    |error| ≤ u_s |W + ΔW| + (k + 3) u (M + |W + ΔW|), M = |L| |R| for factors ΔW = L R of rank k, M = |ΔW| (k = 1) else.
    A fold in float16 arithmetic, or one that dropped a term, exceeds it by orders of magnitude.
    """
    module = refimpl.get(layer.method)
    exact = np.abs(module.merge(W, layer.params, layer.config))
    if hasattr(module, "delta_factors"):
        L, R = module.delta_factors(W, layer.params, layer.config)  # (d_out, k), (k, d_in)
        M, k = np.abs(L) @ np.abs(R), L.shape[1]
    else:
        M, k = np.abs(module.delta_weight(W, layer.params, layer.config)), 1
    u_s = 0.0 if dtype == np.float32 else float(ml_dtypes.finfo(dtype).eps) / 2
    return u_s * exact + (k + 3) * 2.0**-24 * (M + exact)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("method", refimpl.METHODS)
def test_fold_equals_reference_merge_and_unmerged_forward(tmp_path, method, form, precision):
    layers = mlp_layers()
    base = save(mlp_model(layers, form=form, sequence=FORMS[form]), tmp_path / "base.onnx")
    stored = _stored_layers(layers)
    adapter = mlp_adapter(method, stored)
    report = fold(base, adapter, tmp_path / "out.onnx", precision=precision, progress=False)
    assert report.precision == precision

    folded = initializers(tmp_path / "out.onnx")
    for i, layer in enumerate(report.layers):
        W = stored[i][0]  # (d_out, d_in) as stored, float64
        exact = refimpl.get(method).merge(W, adapter.layers[layer.module].params, adapter.layers[layer.module].config)
        merged = folded[layer.initializers[0]]
        if form == "matmul":
            assert layer.layout == "W^T" and layer.located_by == "scope"
            merged = merged.T  # the folded form stores Wᵀ
        else:
            assert layer.layout == "W"
        if precision == "float64":
            np.testing.assert_array_equal(merged, round_to_dtype(exact, np.dtype(np.float32)))
        else:
            assert np.all(np.abs(merged - exact) <= _float32_bound(W, adapter.layers[layer.module], np.dtype(np.float32)))

    x = _x(FORMS[form])
    (y,) = run(tmp_path / "out.onnx", {"x": x})
    want = reference_mlp(x, stored, adapter)
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()
    check = report.verification
    assert check["passed"] and check["conclusive"] and check["max_rel_error"] < 1e-5, check


def test_external_data_streamed_copied_and_nothing_left_behind(tmp_path):
    layers = mlp_layers()
    stored = _stored_layers(layers)
    base = save(mlp_model(layers, form="matmul", sequence=True), tmp_path / "base.onnx", external=True)
    before = listing(tmp_path)
    adapter = mlp_adapter("lora", stored, modules=[0, 2])  # layer 1 and every bias stay as they were
    report = fold(base, adapter, tmp_path / "out.onnx", progress=False)
    assert listing(tmp_path) == sorted(before + ["out.onnx", "out.onnx.data"])
    assert report.external_data == "out.onnx.data"
    model = onnx.load(tmp_path / "out.onnx", load_external_data=False)
    locations = {entry.value for t in model.graph.initializer for entry in t.external_data if entry.key == "location"}
    assert locations == {"out.onnx.data"}  # every tensor points into the new file, none into the input's
    base_values, folded = initializers(base), initializers(tmp_path / "out.onnx")
    for name in ("val_1", "layers.0.bias", "layers.1.bias", "layers.2.bias"):
        np.testing.assert_array_equal(folded[name], base_values[name])  # copied byte for byte
    x = _x(True)
    (y,) = run(tmp_path / "out.onnx", {"x": x})
    want = reference_mlp(x, stored, adapter)
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def test_large_tensors_are_aligned_in_the_data_file(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.standard_normal((512, 520)) / 23, rng.standard_normal(512)), (rng.standard_normal((8, 512)) / 23, None)]
    base = save(mlp_model(layers, form="matmul", sequence=True), tmp_path / "base.onnx", external=True)
    fold(base, mlp_adapter("lora", _stored_layers(layers)), tmp_path / "out.onnx", progress=False)
    model = onnx.load(tmp_path / "out.onnx", load_external_data=False)
    entries = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer}
    assert int(entries["val_0"]["length"]) >= 2**20 and int(entries["val_0"]["offset"]) % 2**16 == 0


@pytest.mark.parametrize("dtype, cast", [(np.float16, False), ("bfloat16", True), (np.float16, True)])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_half_precision_weights_merged_and_rounded_once(tmp_path, dtype, cast, precision):
    """float64: bit for bit the reference merge rounded once; float32: a float32 sum rounded once, within _float32_bound."""
    dtype = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    layers = mlp_layers()
    base = save(mlp_model(layers, form="matmul", sequence=True, dtype=dtype, cast=cast), tmp_path / "base.onnx")
    stored = _stored_layers(layers, dtype)
    adapter = mlp_adapter("lora", stored)
    report = fold(base, adapter, tmp_path / "out.onnx", precision=precision, progress=False)
    folded = initializers(tmp_path / "out.onnx")
    for i, layer in enumerate(report.layers):
        assert layer.dtype == {"float16": "float16", "bfloat16": "bfloat16"}[dtype.name]
        exact = refimpl.lora.merge(stored[i][0], adapter.layers[layer.module].params, adapter.layers[layer.module].config)
        merged = folded[layer.initializers[0]].T
        if precision == "float64":
            np.testing.assert_array_equal(merged.view(np.uint16), round_to_dtype(exact, dtype).view(np.uint16))
        else:
            assert np.all(np.abs(merged.astype(np.float64) - exact) <= _float32_bound(stored[i][0], adapter.layers[layer.module], dtype))
    # onnxruntime against the unmerged reference: the merged weights are rounded to the storage dtype (unit roundoff
    # 4.9e-4 for float16, 3.9e-3 for bfloat16), fp16 activations (no cast) add as much per layer; three layers.
    x = _x(True).astype(np.float32 if cast else dtype)
    (y,) = run(tmp_path / "out.onnx", {"x": x})
    want = reference_mlp(x.astype(np.float64), stored, adapter)
    allowed = 2e-2 if dtype.name == "bfloat16" else 3e-3 if cast else 1e-2
    assert np.abs(y.astype(np.float64) - want).max() <= allowed * np.abs(want).max()
    assert report.verification["passed"]


def test_bat_reads_w_in_the_layout_of_the_graph(tmp_path):
    """Bat's ΔW_ij = (W_ij + I) B_i depends on W: reading Wᵀ as W gives a different, wrong update (checked it differs)."""
    layers = mlp_layers(seed=4)
    base = save(mlp_model(layers, form="matmul", sequence=True), tmp_path / "base.onnx")
    stored = _stored_layers(layers)
    adapter = mlp_adapter("bat", stored)
    fold(base, adapter, tmp_path / "out.onnx", precision="float64", progress=False)
    square = adapter.layers["layers.1"]  # (16, 16): only the graph tells W from Wᵀ
    right = refimpl.bat.merge(stored[1][0], square.params, square.config)
    wrong = refimpl.bat.merge(stored[1][0].T, square.params, square.config).T
    folded = initializers(tmp_path / "out.onnx")["val_1"].T  # stored Wᵀ -> W
    assert np.abs(right - wrong).max() > 1e-2
    np.testing.assert_array_equal(folded, right.astype(np.float32))


def test_modules_to_save_replaced_by_name_and_as_renamed_linear_weight(tmp_path):
    layers = mlp_layers()
    stored = _stored_layers(layers)
    rng = np.random.default_rng(9)
    new_W, new_b = rng.standard_normal((8, 16)) / 4, rng.standard_normal(8)
    for form in ("gemm", "matmul"):
        base = save(mlp_model(layers, form=form, sequence=FORMS[form]), tmp_path / f"{form}.onnx")
        adapter = mlp_adapter("dcft", stored, modules=[0, 1])
        adapter.modules_to_save = {"layers.2": {"weight": new_W, "bias": new_b}}
        report = fold(base, adapter, tmp_path / f"{form}.out.onnx", progress=False)
        assert {(s["param"], s["located_by"]) for s in report.saved} == {("weight", "name" if form == "gemm" else "scope"), ("bias", "name")}
        x = _x(FORMS[form])
        (y,) = run(tmp_path / f"{form}.out.onnx", {"x": x})
        want = reference_mlp(x, stored[:2] + [(new_W.astype(np.float32), new_b.astype(np.float32))], adapter)
        assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def _tied_model(second_user: str) -> onnx.ModelProto:
    """layers.0 (Gemm) and `second_user` both read the initializer layers.0.weight: a tied weight."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(2)
    W = rng.standard_normal((16, 16)).astype(np.float32) / 4
    scope = lambda module: {"pkg.torch.onnx.name_scopes": repr(["", module, "op"])}  # noqa: E731
    nodes = [helper.make_node("Gemm", ["x", "layers.0.weight"], ["h"], name="a", transB=1)]
    if second_user == "gather":  # an embedding table used as the first layer's weight
        nodes.append(helper.make_node("Gather", ["layers.0.weight", "ids"], ["e"], name="b"))
        nodes.append(helper.make_node("ReduceSum", ["e", "axis_1"], ["y2"], name="c", keepdims=0))
    else:
        nodes.append(helper.make_node("Gemm", ["h", "layers.0.weight"], ["y2"], name="b", transB=1))
    for node, module in zip(nodes, ["layers.0", "tied", "tied"]):
        helper.set_metadata_props(node, scope(module))
    inputs = [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 16]), helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n"])]
    y2_shape = ["n"] if second_user == "gather" else ["n", 16]
    outputs = [helper.make_tensor_value_info("h", onnx.TensorProto.FLOAT, ["n", 16]), helper.make_tensor_value_info("y2", onnx.TensorProto.FLOAT, y2_shape)]
    if second_user != "gather":
        inputs = inputs[:1]
    tensors = [numpy_helper.from_array(W, "layers.0.weight"), numpy_helper.from_array(np.array([1]), "axis_1")]
    graph = helper.make_graph(nodes, "tied", inputs, outputs, tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("second_user", ["gather", "gemm"])
def test_tied_weight_copied_for_the_adapted_module_only(tmp_path, second_user):
    base = save(_tied_model(second_user), tmp_path / "base.onnx")
    W = initializers(base)["layers.0.weight"].astype(np.float64)
    rng = np.random.default_rng(3)
    adapter = Adapter({"layers.0": layer_adapter("bone", "layers.0", W, rng)})
    report = fold(base, adapter, tmp_path / "out.onnx", precision="float64", progress=False)
    (layer,) = report.layers
    assert layer.shared and layer.initializers == ["layers.0.weight.peftref.layers.0"]
    folded = initializers(tmp_path / "out.onnx")
    np.testing.assert_array_equal(folded["layers.0.weight"], W.astype(np.float32))  # the other user's tensor is untouched
    np.testing.assert_array_equal(folded[layer.initializers[0]], adapter.layers["layers.0"].merge(W).astype(np.float32))
    x = rng.standard_normal((3, 16)).astype(np.float32)
    feeds = {"x": x, "ids": np.array([0, 5, 15])} if second_user == "gather" else {"x": x}
    h, y2 = run(tmp_path / "out.onnx", feeds)
    Wm = adapter.layers["layers.0"].merge(W)
    np.testing.assert_allclose(h, x @ Wm.T, rtol=1e-5, atol=1e-5)
    expected_y2 = W[[0, 5, 15]].sum(axis=1) if second_user == "gather" else (x @ Wm.T) @ W.T  # tied user: original W
    np.testing.assert_allclose(y2, expected_y2, rtol=1e-5, atol=1e-5)


def test_two_adapted_modules_sharing_one_weight_each_get_their_copy(tmp_path):
    base = save(_tied_model("gemm"), tmp_path / "base.onnx")
    W = initializers(base)["layers.0.weight"].astype(np.float64)
    rng = np.random.default_rng(4)
    adapter = Adapter({m: layer_adapter("lora", m, W, rng) for m in ("layers.0", "tied")})
    report = fold(base, adapter, tmp_path / "out.onnx", progress=False)
    folded = initializers(tmp_path / "out.onnx")
    assert "layers.0.weight" not in folded  # no reader left: dropped
    assert sorted(folded) == sorted(["axis_1"] + [layer.initializers[0] for layer in report.layers])
    assert report.verification["passed"] and report.verification["conclusive"]


def test_a_module_used_twice_is_changed_once_in_place(tmp_path):
    """The same Linear called twice (two MatMuls of one scope on one initializer): one in-place change."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(6)
    W = rng.standard_normal((8, 8)).astype(np.float32) / 3
    nodes = [helper.make_node("MatMul", ["x", "val_0"], ["h"], name="m1"), helper.make_node("MatMul", ["h", "val_0"], ["y"], name="m2")]
    for node in nodes:
        helper.set_metadata_props(node, {"pkg.torch.onnx.name_scopes": repr(["", "block.proj", "linear"])})
    graph = helper.make_graph(
        nodes, "twice", [helper.make_tensor_value_info("x", 1, [2, 8])], [helper.make_tensor_value_info("y", 1, [2, 8])],
        [numpy_helper.from_array(np.ascontiguousarray(W.T), "val_0")],
    )  # fmt: skip
    base = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "base.onnx")
    adapter = Adapter({"proj": layer_adapter("svd_rescale", "proj", W.astype(np.float64), rng)})  # a suffix of block.proj
    report = fold(base, adapter, tmp_path / "out.onnx", progress=False)
    (layer,) = report.layers
    assert (layer.graph_module, layer.initializers, layer.shared) == ("block.proj", ["val_0"], False)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    (y,) = run(tmp_path / "out.onnx", {"x": x})
    Wm = adapter.layers["proj"].merge(W.astype(np.float64))
    np.testing.assert_allclose(y, x @ Wm.T @ Wm.T, rtol=1e-5, atol=1e-5)


def test_unnamed_weights_found_by_shape_or_by_value(tmp_path):
    """A graph without scopes and with renamed weights: a unique shape suffices; equal shapes need the base weights."""
    unique = mlp_layers()
    base = save(mlp_model(unique, form="matmul", sequence=True, scopes=False), tmp_path / "unique.onnx")
    report = fold(base, mlp_adapter("lora", _stored_layers(unique)), tmp_path / "unique.out.onnx", progress=False)
    assert [layer.located_by for layer in report.layers] == ["shape"] * 3
    assert report.verification["passed"]

    same = mlp_layers(shapes=[(16, 16)] * 3)
    base = save(mlp_model(same, form="matmul", sequence=True, scopes=False), tmp_path / "same.onnx")
    stored = _stored_layers(same)
    adapter = mlp_adapter("lora", stored)
    with pytest.raises(ExportError, match=r"'layers.0' is ambiguous: 3 unnamed weights match .*pass the base model's weights"):
        fold(base, adapter, tmp_path / "same.out.onnx", progress=False)
    weights = {f"layers.{i}.weight": W.astype(np.float32) for i, (W, _) in enumerate(stored)}
    report = fold(base, adapter, tmp_path / "same.out.onnx", base_weights=weights, progress=False)
    assert [layer.located_by for layer in report.layers] == ["value"] * 3
    assert [layer.initializers for layer in report.layers] == [["val_0"], ["val_1"], ["val_2"]]
    x = _x(True, d_in=16)
    (y,) = run(tmp_path / "same.out.onnx", {"x": x})
    want = reference_mlp(x, stored, adapter)
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def test_base_weights_confirm_named_weights(tmp_path):
    layers = mlp_layers()
    stored = _stored_layers(layers)
    base = save(mlp_model(layers, form="gemm"), tmp_path / "base.onnx")
    good = {f"layers.{i}.weight": W.astype(np.float32) for i, (W, _) in enumerate(stored)}
    fold(base, mlp_adapter("bone", stored), tmp_path / "out.onnx", base_weights=good, progress=False)
    bad = dict(good, **{"layers.1.weight": good["layers.1.weight"] + 1})
    with pytest.raises(ExportError, match=r"'layers.1': the graph's weight .* differs from the base weights"):
        fold(base, mlp_adapter("bone", stored), tmp_path / "out2.onnx", base_weights=bad, progress=False)


def test_model_proto_base_and_report(tmp_path):
    layers = mlp_layers()
    adapter = mlp_adapter("sdctft", _stored_layers(layers))
    report = fold(mlp_model(layers), adapter, tmp_path / "out.onnx", progress=False)
    assert listing(tmp_path) == ["out.onnx"]
    d = report.to_dict()
    assert [row["module"] for row in d["layers"]] == ["layers.0", "layers.1", "layers.2"]
    assert all(row["seconds"] >= 0 and row["method"] == "sdctft" for row in d["layers"])
    assert d["verification"]["provider"] == "CPUExecutionProvider"
    assert set(CONFIGS) == set(refimpl.METHODS)


def test_short_writes_and_no_copy_file_range(tmp_path, monkeypatch):
    """Regression: with copy_file_range unavailable (another file system) unchanged tensors go through pread/pwrite, and
    pwrite may write fewer bytes than asked; every byte must still land. Here pwrite writes at most 7 bytes a call."""
    import os

    layers = mlp_layers()
    stored = _stored_layers(layers)
    base = save(mlp_model(layers, form="matmul", sequence=True), tmp_path / "base.onnx", external=True)
    adapter = mlp_adapter("lora", stored, modules=[0, 2])
    fold(base, adapter, tmp_path / "expected.onnx", verify=False, progress=False)

    def no_copy_file_range(*args):
        raise OSError(18, "Invalid cross-device link")

    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "copy_file_range", no_copy_file_range)
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: real_pwrite(fd, memoryview(data)[:7], at))
    fold(base, adapter, tmp_path / "out.onnx", verify=False, progress=False)
    expected, folded = initializers(tmp_path / "expected.onnx"), initializers(tmp_path / "out.onnx")
    assert folded.keys() == expected.keys() and "val_1" in folded  # val_1: a weight copied unchanged
    for name, value in expected.items():
        np.testing.assert_array_equal(folded[name], value)
