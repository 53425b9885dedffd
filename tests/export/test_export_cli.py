"""``peftref export``: the table and JSON it prints, one-line errors with exit status 2, nothing written on failure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_cases import listing, mlp_adapter, mlp_layers, reference_mlp, run, save

from peftref.checkpoints import write_adapter
from peftref.cli import main
from peftref.export.models import mlp_model


@pytest.fixture
def files(tmp_path):
    """A base (constant-folded form, external data) and a LoRA adapter in PEFT's format, written by peftref.checkpoints."""
    layers = mlp_layers()
    base = save(mlp_model(layers, form="matmul", sequence=True), tmp_path / "base.onnx", external=True)
    stored = [(W.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)) for W, b in layers]
    adapter = mlp_adapter("lora", stored)
    write_adapter(adapter, tmp_path / "adapter")
    return tmp_path, base, adapter, stored


def test_table(files, capsys):
    tmp_path, base, adapter, stored = files
    assert main(["export", "--onnx", str(base), "--adapter", str(tmp_path / "adapter"), "-o", str(tmp_path / "out.onnx"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["module", "method", "found", "by", "initializer", "layout", "dtype", "d_out×d_in", "seconds"]
    assert [line.split()[:6] for line in lines[2:5]] == [
        ["layers.0", "lora", "scope", "val_0", "W^T", "float32"],
        ["layers.1", "lora", "scope", "val_1", "W^T", "float32"],
        ["layers.2", "lora", "scope", "val_2", "W^T", "float32"],
    ]
    assert "wrote " in out and "out.onnx + out.onnx.data: 3 layers folded" in out
    assert "verified on onnxruntime (CPUExecutionProvider)" in out and "not conclusive" not in out
    x = np.random.default_rng(0).standard_normal((2, 4, 24)).astype(np.float32)
    (y,) = run(tmp_path / "out.onnx", {"x": x})
    want = reference_mlp(x, stored, adapter)
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()  # float32 through 3 small layers, as in test_export_fold


def test_json(files, capsys):
    tmp_path, base, _, _ = files
    args = ["export", "--onnx", str(base), "--adapter", str(tmp_path / "adapter"), "-o", str(tmp_path / "out.onnx"), "--json", "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [layer["module"] for layer in report["layers"]] == ["layers.0", "layers.1", "layers.2"]
    assert report["external_data"] == "out.onnx.data"
    assert report["verification"]["passed"] and report["verification"]["max_rel_error"] < 1e-5


def test_no_verify(files, capsys):
    tmp_path, base, _, _ = files
    args = ["export", "--onnx", str(base), "--adapter", str(tmp_path / "adapter"), "-o", str(tmp_path / "out.onnx"), "--no-verify", "--json", "--no-progress"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["verification"] is None


def test_error_is_one_line_with_status_2(files, capsys):
    tmp_path, base, _, _ = files
    before = listing(tmp_path)
    status = main(["export", "--onnx", str(base), "--adapter", str(tmp_path / "adapter"), "-o", str(base), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 2 and listing(tmp_path) == before
    assert err.count("\n") == 1 and err.startswith("peftref export: error: output ") and "is the input file" in err


def test_missing_adapter_directory(files, capsys):
    tmp_path, base, _, _ = files
    status = main(["export", "--onnx", str(base), "--adapter", str(tmp_path / "nope"), "-o", str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "nope: not an adapter directory" in err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--onnx BASE.onnx" in out and "--no-verify" in out and "--base-weights" in out
