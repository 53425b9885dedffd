"""``peftref inspect``: the numbers it prints, its JSON, --module, and the plots it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
from adapters_in_code import BERT_SHAPES, make_adapter

from peftref.checkpoints import write_adapter
from peftref.cli import main

SAVED = {"pooler.dense": {"weight": np.zeros((32, 32), np.float32), "bias": np.zeros(32, np.float32)}}
WIDTHS = sum(d_out + d_in for d_out, d_in in BERT_SHAPES.values())  # Σ (d_out + d_in) = 448


def inspect(capsys, *args) -> str:
    assert main(["inspect", *map(str, args)]) == 0
    return capsys.readouterr().out


@pytest.fixture
def lora_dir(tmp_path):
    adapter = make_adapter("lora", fields={"r": 4, "alpha": 8.0})
    adapter.modules_to_save = SAVED
    write_adapter(adapter, tmp_path / "lora")
    return tmp_path / "lora"


@pytest.fixture
def base_file(tmp_path):
    path = tmp_path / "base.safetensors"
    rng = np.random.default_rng(0)
    safetensors.numpy.save_file({f"{m}.weight": rng.standard_normal(s).astype(np.float32) for m, s in BERT_SHAPES.items()}, path)
    return path


def test_text_report_counts(capsys, lora_dir):
    out = inspect(capsys, lora_dir)
    assert f"adapter: {lora_dir} (PEFT LORA, method lora)" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("encoder.layer.0.intermediate.dense"))
    assert row == ["encoder.layer.0.intermediate.dense", "48×32", "r=4,", "alpha=8.0,", "use_rslora=False", "320", "0"]
    assert f"trainable: {4 * WIDTHS:,} in 8 modules" in out  # r (d_in + d_out) per module
    assert f"modules_to_save: pooler.dense 1,056; with them, as PEFT counts: {4 * WIDTHS + 1056:,}" in out
    # a rank-4 LoRA is half of rank 8, and its equal-parameter LoRA rank is 4 itself
    assert f"LoRA r=8 on the same modules: {8 * WIDTHS:,} trainable (this adapter: 0.5×); equal-parameter LoRA rank: 4" in out


def test_json_report(capsys, tmp_path):
    write_adapter(make_adapter("sdctft", fields={"n": 24}), tmp_path / "s")
    summary = json.loads(inspect(capsys, tmp_path / "s", "--json"))
    assert summary["format"] == "peftref" and summary["method"] == "sdctft"
    assert [row["module"] for row in summary["modules"]] == sorted(BERT_SHAPES)
    assert all(row["trainable"] == 24 and row["frozen"] == 48 for row in summary["modules"])  # n, and indices (2, n)
    assert summary["trainable"] == summary["peft_trainable"] == 24 * 8 and summary["frozen"] == 48 * 8
    assert summary["lora_r8_trainable"] == 8 * WIDTHS and summary["lora_equal_rank"] == pytest.approx(24 * 8 / WIDTHS)
    assert summary["modules"][0]["config"] == {"n": 24, "alpha": 1.0, "seed": 0, "energy_fraction": 0.7, "bands": 3, "init": "zeros"}


def test_module_option_selects_by_suffix(capsys, lora_dir):
    summary = json.loads(inspect(capsys, lora_dir, "--json", "--module", "layer.1.output.dense"))
    assert [row["module"] for row in summary["modules"]] == ["encoder.layer.1.output.dense"]
    assert summary["trainable"] == 4 * (32 + 48)


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("method, width", [("fourierft", 1100), ("sdctft", 1100), ("bone", 600), ("bat", 600), ("svd_rescale", 600)])
def test_plot_writes_a_png(capsys, tmp_path, base_file, method, width):
    """Spectral methods get two panels (ΔW and spectrum, 11 in wide at 100 dpi), the others one (6 in)."""
    write_adapter(make_adapter(method), tmp_path / method)
    out = inspect(capsys, tmp_path / method, "--base", base_file, "--plot", tmp_path / "plot.png", "--module", "layer.0.intermediate.dense")
    assert f"wrote {tmp_path / 'plot.png'}" in out
    assert png_size(tmp_path / "plot.png") == (width, 500)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["base.safetensors", method, "plot.png"])  # no temporary left


def test_a_failed_plot_leaves_no_file(capsys, tmp_path, monkeypatch, lora_dir):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", lambda *a, **k: (_ for _ in ()).throw(ValueError("renderer failed")))
    assert main(["inspect", str(lora_dir), "--plot", str(tmp_path / "plot.png")]) == 2
    assert "renderer failed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora"]


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(option in out for option in ("ADAPTER_DIR", "--base", "--json", "--plot", "--module"))
