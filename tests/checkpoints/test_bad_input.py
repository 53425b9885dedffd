"""Bad input, one test each, through the command line: exit status 2 and one line on stderr naming file, module, key.

Each test starts from a valid adapter (written by our writer in PEFT's or peftref's format) and breaks one thing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
from adapters_in_code import make_adapter

from peftref.checkpoints import write_adapter
from peftref.cli import main

Q0, Q1 = "encoder.layer.0.attention.self.query", "encoder.layer.1.attention.self.query"
SHAPES = {Q0: (8, 6), Q1: (8, 6)}
KEY_A0 = f"base_model.model.{Q0}.lora_A.weight"


def inspect_error(capsys, *args) -> str:
    """Run ``peftref inspect ARGS``; require exit status 2 and exactly one line on stderr; return that line."""
    status = main(["inspect", *map(str, args)])
    err = capsys.readouterr().err
    assert status == 2, f"expected exit status 2, got {status}; stderr: {err}"
    assert err.startswith("peftref inspect: error: ") and err.count("\n") == 1, err
    return err


def written(tmp_path, method="lora", fmt="auto", **fields):
    """A valid adapter on SHAPES (LoRA r = 2, FourierFT n = 5 unless `fields` say otherwise)."""
    directory = tmp_path / "adapter"
    fields = fields or {"lora": {"r": 2, "alpha": 4.0}, "fourierft": {"n": 5}}.get(method)
    write_adapter(make_adapter(method, SHAPES, fields=fields), directory, format=fmt)
    return directory


def edit_config(directory, **changes):
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def edit_tensors(directory, change):
    path = directory / "adapter_model.safetensors"
    tensors = safetensors.numpy.load_file(path)
    change(tensors)
    safetensors.numpy.save_file(tensors, path)


def base_file(tmp_path, shapes: dict) -> str:
    path = tmp_path / "base.safetensors"
    safetensors.numpy.save_file({f"{m}.weight": np.zeros(s, np.float32) for m, s in shapes.items()}, path)
    return path


def test_missing_directory(tmp_path, capsys):
    assert "nowhere: not an adapter directory" in inspect_error(capsys, tmp_path / "nowhere")


def test_missing_config(tmp_path, capsys):
    directory = written(tmp_path)
    (directory / "adapter_config.json").unlink()
    assert "adapter_config.json: file not found" in inspect_error(capsys, directory)


def test_missing_weights(tmp_path, capsys):
    directory = written(tmp_path)
    (directory / "adapter_model.safetensors").unlink()
    assert "adapter_model.safetensors: file not found" in inspect_error(capsys, directory)


def test_pickled_bin_only_says_how_to_convert(tmp_path, capsys):
    directory = written(tmp_path)
    (directory / "adapter_model.safetensors").rename(directory / "adapter_model.bin")
    err = inspect_error(capsys, directory)
    assert "adapter_model.bin: only a pickled adapter_model.bin" in err
    assert "torch.load(" in err and "weights_only=True" in err and "from safetensors.torch import save_file" in err


def test_invalid_json(tmp_path, capsys):
    directory = written(tmp_path)
    (directory / "adapter_config.json").write_text('{"peft_type": "LORA",')
    assert "adapter_config.json: not valid JSON" in inspect_error(capsys, directory)


def test_unknown_peft_type(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, peft_type="IA3")
    err = inspect_error(capsys, directory)
    assert "adapter_config.json: field 'peft_type' = 'IA3': expected one of LORA, FOURIERFT, MISS, BONE" in err


def test_dora_is_refused(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, use_dora=True)
    assert "adapter_config.json: field 'use_dora' = True: DoRA is a different method; not supported" in inspect_error(capsys, directory)


def test_trained_bias_is_refused(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, lora_bias=True)
    assert "field 'lora_bias' = True: adds a trained bias to lora_B" in inspect_error(capsys, directory)


def test_base_modifying_initialisation_is_refused(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, init_lora_weights="pissa")
    err = inspect_error(capsys, directory)
    assert "field 'init_lora_weights' = 'pissa': this initialisation changes the base weights" in err
    assert "path_initial_model_for_weight_conversion" in err


def test_unknown_non_empty_field_is_refused(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, lora_magic=3, future_option=None)  # an empty unknown field is fine, a set one is not
    assert "unknown LORA field 'lora_magic' = 3" in inspect_error(capsys, directory)


def test_shape_disagreeing_with_the_base(tmp_path, capsys):
    directory = written(tmp_path)
    base = base_file(tmp_path, {Q0: (8, 6), Q1: (8, 7)})
    err = inspect_error(capsys, directory, "--base", base)
    assert f"adapter_model.safetensors: module '{Q1}': the adapter implies d_out = 8, d_in = 6" in err
    assert "has weight shape (8, 7)" in err


def test_module_missing_from_the_base(tmp_path, capsys):
    directory = written(tmp_path)
    base = base_file(tmp_path, {Q0: (8, 6), "encoder.layer.1.attention.self.key": (8, 6)})
    err = inspect_error(capsys, directory, "--base", base)
    assert f"module '{Q1}' not found in base {base}" in err and "modules ending in 'query' there" in err


def test_ambiguous_module_suffix(tmp_path, capsys):
    directory = written(tmp_path)
    base = base_file(tmp_path, {f"bert.{Q0}": (8, 6), f"bert.{Q1}": (8, 6), f"roberta.{Q1}": (8, 6)})
    err = inspect_error(capsys, directory, "--base", base)
    assert f"module '{Q1}' is ambiguous in base {base}: it matches ['bert.{Q1}', 'roberta.{Q1}']" in err


def test_missing_key(tmp_path, capsys):
    directory = written(tmp_path)
    edit_tensors(directory, lambda t: t.pop(f"base_model.model.{Q1}.lora_B.weight"))
    assert f"module '{Q1}': missing keys ['base_model.model.{Q1}.lora_B.weight']" in inspect_error(capsys, directory)


def test_extra_key(tmp_path, capsys):
    directory = written(tmp_path)
    edit_tensors(directory, lambda t: t.update({f"base_model.model.{Q1}.lora_magnitude_vector": np.ones(8, np.float32)}))
    err = inspect_error(capsys, directory)
    assert f"unexpected key 'base_model.model.{Q1}.lora_magnitude_vector': not a parameter of this adapter" in err


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_value(tmp_path, capsys, value):
    directory = written(tmp_path)
    edit_tensors(directory, lambda t: t[KEY_A0].__setitem__((1, 2), value))
    err = inspect_error(capsys, directory)
    where = f"adapter_model.safetensors: module '{Q0}', key '{KEY_A0}'"
    assert f"{where}: contains non-finite values (NaN or Inf), first at index (1, 2)" in err


def test_truncated_safetensors(tmp_path, capsys):
    directory = written(tmp_path)
    path = directory / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    assert "adapter_model.safetensors: not a readable safetensors file, it may be truncated or corrupt" in inspect_error(capsys, directory)


def test_corrupt_safetensors(tmp_path, capsys):
    directory = written(tmp_path)
    (directory / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    assert "adapter_model.safetensors: not a readable safetensors file" in inspect_error(capsys, directory)


def test_integer_parameter_dtype(tmp_path, capsys):
    directory = written(tmp_path)
    edit_tensors(directory, lambda t: t.update({KEY_A0: t[KEY_A0].astype(np.int32)}))
    err = inspect_error(capsys, directory)
    assert f"key '{KEY_A0}': expected a floating-point dtype (float16, bfloat16, float32, float64), got int32" in err


def test_wrong_number_of_dimensions(tmp_path, capsys):
    directory = written(tmp_path)
    edit_tensors(directory, lambda t: t.update({KEY_A0: t[KEY_A0].reshape(-1)}))
    assert f"key '{KEY_A0}': expected a 2-D array (r, d_in), got shape (12,)" in inspect_error(capsys, directory)


def test_rank_disagreeing_with_the_config(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, rank_pattern={"layer.0.attention.self.query": 3})
    assert f"key '{KEY_A0}': rank 2 disagrees with r = 3" in inspect_error(capsys, directory)


def test_invalid_pattern_regex(tmp_path, capsys):
    directory = written(tmp_path)
    edit_config(directory, alpha_pattern={"query(": 3})
    assert "adapter_config.json: alpha_pattern: key 'query(' is not a valid regular expression" in inspect_error(capsys, directory)


def test_fourierft_spectrum_length_disagreeing_with_n_frequency(tmp_path, capsys):
    directory = written(tmp_path, "fourierft")
    edit_config(directory, n_frequency=6)
    err = inspect_error(capsys, directory, "--base", base_file(tmp_path, SHAPES))
    assert f"fourierft_spectrum': spectrum length 5 disagrees with n_frequency = 6" in err


def test_fourierft_needs_a_base(tmp_path, capsys):
    directory = written(tmp_path, "fourierft")
    assert f"module '{Q0}': the adapter does not fix d_out and d_in; give the base model" in inspect_error(capsys, directory)


def test_newer_peftref_format_version(tmp_path, capsys):
    directory = written(tmp_path, "sdctft", n=5)
    edit_config(directory, peftref_format_version=2)
    assert "peftref format version 2 is newer than this peftref reads (1)" in inspect_error(capsys, directory)


def test_peftref_unknown_method(tmp_path, capsys):
    directory = written(tmp_path, "sdctft", n=5)
    edit_config(directory, method="dora")
    assert "field 'method': expected one of lora, fourierft, sdctft" in inspect_error(capsys, directory)


def test_peftref_float_indices(tmp_path, capsys):
    directory = written(tmp_path, "sdctft", n=5)
    edit_tensors(directory, lambda t: t.update({f"{Q0}.indices": t[f"{Q0}.indices"].astype(np.float32)}))
    assert f"module '{Q0}', key '{Q0}.indices': expected an integer dtype for indices, got float32" in inspect_error(capsys, directory)


def test_peftref_duplicate_indices(tmp_path, capsys):
    directory = written(tmp_path, "sdctft", n=5)
    edit_tensors(directory, lambda t: t[f"{Q0}.indices"].__setitem__((slice(None), 1), t[f"{Q0}.indices"][:, 0]))
    assert f"key '{Q0}.indices': sdctft: parameter 'indices' has duplicate location" in inspect_error(capsys, directory)


def test_peftref_invalid_module_config(tmp_path, capsys):
    directory = written(tmp_path, "dcft", d=2)
    config = json.loads((directory / "adapter_config.json").read_text())
    config["modules"][Q1]["config"]["d"] = 5  # 5 does not tile 8 × 6
    (directory / "adapter_config.json").write_text(json.dumps(config))
    assert f"module '{Q1}' with shape (d_out, d_in) = (8, 6): dcft: d_out = 8 does not fit kernel d = 5" in inspect_error(capsys, directory)


def test_module_option_not_in_the_adapter(tmp_path, capsys):
    directory = written(tmp_path)
    assert "module 'value' not found in the adapter" in inspect_error(capsys, directory, "--module", "value")


def test_missing_base_file(tmp_path, capsys):
    directory = written(tmp_path)
    assert "missing.safetensors: base model not found" in inspect_error(capsys, directory, "--base", tmp_path / "missing.safetensors")


def test_bat_plot_without_base_weights_writes_nothing(tmp_path, capsys):
    directory = written(tmp_path, "bat", fmt="peftref", r=2)  # peftref's format records shapes, so reading needs no base
    err = inspect_error(capsys, directory, "--plot", tmp_path / "bat.png")
    assert "--plot of a bat layer needs the base weights: pass --base" in err
    assert not (tmp_path / "bat.png").exists()
