"""Writing adapters: exact round trips, PEFT loading what we write, atomic and refusing writes."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from adapters_in_code import BERT_SHAPES, CONFIGS, make_adapter
from hypothesis import given
from hypothesis import strategies as st

from peftref import refimpl
from peftref.adapter import Adapter, LayerAdapter
from peftref.checkpoints import CheckpointError, read_adapter, write_adapter

SAVED = {"pooler.dense": {"weight": np.arange(1024, dtype=np.float32).reshape(32, 32) / 1024, "bias": np.ones(32, np.float32)}}


def assert_same_adapter(read, written: Adapter) -> None:
    """Same modules, methods, configs, shapes, layouts, and bitwise-equal arrays of the same dtype."""
    assert sorted(read.layers) == sorted(written.layers)
    for module, layer in written.layers.items():
        other = read.layers[module]
        fields = ("method", "config", "shape", "fan_in_fan_out")
        assert [getattr(other, f) for f in fields] == [getattr(layer, f) for f in fields], module
        assert sorted(other.params) == sorted(layer.params), module
        for name, array in layer.params.items():
            assert other.params[name].dtype == array.dtype, (module, name)
            assert other.params[name].shape == array.shape and other.params[name].tobytes() == np.asarray(array).tobytes(), (module, name)
    assert sorted(read.modules_to_save) == sorted(written.modules_to_save)
    for module, tensors in written.modules_to_save.items():
        assert {k: v.tobytes() for k, v in read.modules_to_save[module].items()} == {k: v.tobytes() for k, v in tensors.items()}


@pytest.mark.parametrize("fmt", ["auto", "peftref"])
@pytest.mark.parametrize("method", refimpl.METHODS)
def test_write_then_read_is_bitwise_exact(tmp_path, method, fmt):
    adapter = make_adapter(method)
    adapter.modules_to_save = SAVED
    write_adapter(adapter, tmp_path / "out", format=fmt)
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    peft_types = {"lora": "LORA", "fourierft": "FOURIERFT", "bone": "MISS", "bat": "MISS"}
    assert config["peft_type"] == (peft_types.get(method, "PEFTREF") if fmt == "auto" else "PEFTREF")
    assert_same_adapter(read_adapter(tmp_path / "out", base=BERT_SHAPES), adapter)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float32])
@pytest.mark.parametrize("method", ["lora", "sdctft"])
def test_storage_dtypes_are_kept(tmp_path, method, dtype):
    adapter = make_adapter(method, dtype=dtype)
    write_adapter(adapter, tmp_path / "out")
    assert_same_adapter(read_adapter(tmp_path / "out"), adapter)


def test_bone_mini_round_trips_through_peft_format(tmp_path):
    adapter = make_adapter("bone", fields={"r": 4, "mini_r": 8})
    write_adapter(adapter, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["init_weights"] == "mini"
    assert_same_adapter(read_adapter(tmp_path / "out", base=BERT_SHAPES), adapter)


MODULES = ["layer.0.q", "encoder.layer.0.q", "encoder.layer.1.q", "encoder.layer.0.v", "decoder.q", "q"]


@given(
    ranks=st.lists(st.sampled_from([1, 2, 4]), min_size=len(MODULES), max_size=len(MODULES)),
    alphas=st.lists(st.sampled_from([1.0, 8.0, 16.0]), min_size=len(MODULES), max_size=len(MODULES)),
)
def test_lora_rank_and_alpha_patterns_round_trip_or_are_refused(tmp_path_factory, ranks, alphas):
    """Per-module r and alpha become r/lora_alpha plus rank_pattern/alpha_pattern; names that are dot-suffixes of one
    another ("q", "layer.0.q") can make PEFT's pattern matching ambiguous: then the writer refuses rather than mis-write."""
    per_module = {m: {"r": r, "alpha": a} for m, r, a in zip(MODULES, ranks, alphas)}
    adapter = make_adapter("lora", shapes={m: (6, 5) for m in MODULES}, per_module=per_module)
    out = tmp_path_factory.mktemp("patterns") / "out"
    try:
        write_adapter(adapter, out)
    except CheckpointError as err:
        assert "PEFT's pattern matching would give it" in str(err) and "format='peftref'" in str(err)
        assert not out.exists()
        return
    assert_same_adapter(read_adapter(out), adapter)


def test_fourierft_with_n_pattern_round_trips(tmp_path):
    per_module = {"encoder.layer.0.attention.self.value": {"n": 7}, "encoder.layer.1.output.dense": {"n": 9}}
    adapter = make_adapter("fourierft", per_module=per_module)
    write_adapter(adapter, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["n_frequency"] == 20 and config["n_frequency_pattern"] == {m: f["n"] for m, f in per_module.items()}
    assert_same_adapter(read_adapter(tmp_path / "out", base=BERT_SHAPES), adapter)


# ---- PEFT loads what we write --------------------------------------------------------------------------------------

LOAD_CASES = {  # case -> (architecture, method, per-module config overrides, fan_in_fan_out)
    "lora": ("bert", "lora", {"encoder.layer.1.attention.self.query": {"r": 2, "alpha": 3.0}}, False),
    "lora_rslora": ("llama", "lora", None, False),
    "lora_conv1d": ("gpt2", "lora", None, True),
    "fourierft": ("bert", "fourierft", {"encoder.layer.0.intermediate.dense": {"n": 33}}, False),
    "fourierft_conv1d": ("gpt2", "fourierft", None, True),
    "bone": ("bert", "bone", None, False),
    "bone_mini": ("bert", "bone", None, False),
    "bat": ("bert", "bat", None, False),
}
ARCH_MODULES = {  # arch -> suffixes of the modules to adapt
    "bert": ("attention.self.query", "attention.self.value", "intermediate.dense", "output.dense"),
    "llama": ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"),
    "gpt2": ("attn.c_attn", "mlp.c_fc", "mlp.c_proj"),
}


@pytest.mark.parametrize("case", LOAD_CASES)
def test_peft_from_pretrained_loads_our_files_and_computes_our_outputs(tmp_path, base_dirs, case):
    """PeftModel.from_pretrained on our files == the base model with weights merged by the reference, in float32."""
    import torch
    from checkpoint_models import tiny_model
    from peft import PeftModel

    from peftref.checkpoints import base_shapes

    arch, method, per_module, fan_in_fan_out = LOAD_CASES[case]
    stored = base_shapes(base_dirs[arch])
    shapes = {m: (s[::-1] if fan_in_fan_out else s) for m, s in stored.items() if m.endswith(ARCH_MODULES[arch])}
    fields = {"lora_rslora": {"r": 4, "alpha": 16.0, "use_rslora": True}, "bone_mini": {"r": 4, "mini_r": 8}}.get(case)
    adapter = make_adapter(method, shapes, fields=fields, per_module=per_module, dtype=np.float32, fan_in_fan_out=fan_in_fan_out)
    if arch == "bert":
        adapter.modules_to_save = SAVED
    write_adapter(adapter, tmp_path / "adapter")

    peft_model = PeftModel.from_pretrained(tiny_model(arch), tmp_path / "adapter").eval()
    merged = tiny_model(arch)
    state = merged.state_dict()
    for module, layer in adapter.layers.items():
        W = state[f"{module}.weight"].double().numpy()
        W_merged = layer.merge(W.T if fan_in_fan_out else W)  # (d_out, d_in)
        state[f"{module}.weight"] = torch.from_numpy((W_merged.T if fan_in_fan_out else W_merged).astype(np.float32))
    for module, tensors in adapter.modules_to_save.items():
        state.update({f"{module}.{name}": torch.from_numpy(array) for name, array in tensors.items()})
    merged.load_state_dict(state)
    ids = torch.arange(1, 13).reshape(2, 6)
    with torch.no_grad():
        expected, actual = peft_model(input_ids=ids).last_hidden_state, merged(input_ids=ids).last_hidden_state
        unadapted = tiny_model(arch)(input_ids=ids).last_hidden_state
    # Both are float32 forwards of a 2-layer model on O(1) activations that differ only in where ΔW is rounded (merged
    # once into W vs computed and added per call). Measured: at most 3.0e-6 (FourierFT on GPT-2); 1e-5 leaves a factor 3,
    # and a wrong layout, scaling or missing module changes the outputs by more than 1e-3 (asserted below).
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=0)
    assert float((actual - unadapted).abs().max()) > 1e-3, "the adapter must change the outputs, or the test proves nothing"


# ---- refusals and atomicity ----------------------------------------------------------------------------------------


def test_refuses_a_non_empty_target_and_keeps_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match=r"out: directory exists and is not empty; pass overwrite=True"):
        write_adapter(make_adapter("lora"), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_overwrite_replaces_the_whole_directory(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    write_adapter(make_adapter("sdctft"), tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_empty_existing_directory_is_filled(tmp_path):
    (tmp_path / "out").mkdir()
    write_adapter(make_adapter("dcft"), tmp_path / "out")
    assert read_adapter(tmp_path / "out").layers.keys() == BERT_SHAPES.keys()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.numpy

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_adapter(make_adapter("lora"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_overwriting_keeps_the_old_adapter(tmp_path, monkeypatch):
    import safetensors.numpy

    write_adapter(make_adapter("lora", seed=1), tmp_path / "out")
    before = (tmp_path / "out" / "adapter_model.safetensors").read_bytes()
    monkeypatch.setattr(safetensors.numpy, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_adapter(make_adapter("lora", seed=2), tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_non_finite_parameters_naming_module_and_key(tmp_path):
    adapter = make_adapter("lora")
    adapter.layers["encoder.layer.1.output.dense"].params["B"][3, 1] = np.nan
    message = r"module 'encoder.layer.1.output.dense', key 'B': contains non-finite values .* index \(3, 1\)"
    with pytest.raises(CheckpointError, match=message):
        write_adapter(adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_mixed_methods(tmp_path):
    lora, dcft = make_adapter("lora"), make_adapter("dcft")
    mixed = Adapter({**dict(list(lora.layers.items())[:2]), **dict(list(dcft.layers.items())[2:])})
    with pytest.raises(CheckpointError, match=r"one adapter file holds one method, but the layers use \['dcft', 'lora'\]"):
        write_adapter(mixed, tmp_path / "out")


def test_peft_format_refuses_what_peft_cannot_express(tmp_path):
    mixed = make_adapter("lora", per_module={"encoder.layer.0.attention.self.query": {"use_rslora": True}})
    with pytest.raises(CheckpointError, match=r"one use_rslora for all modules.*write with format='peftref'"):
        write_adapter(mixed, tmp_path / "a")
    write_adapter(mixed, tmp_path / "a", format="peftref")
    assert_same_adapter(read_adapter(tmp_path / "a"), mixed)

    moved = make_adapter("fourierft")
    layer = moved.layers["encoder.layer.0.attention.self.query"]
    layer.params["indices"] = np.stack([np.arange(20), np.arange(20)])  # not PEFT's locations for seed 777
    with pytest.raises(CheckpointError, match=r"not PEFT's locations for seed 777.*format='peftref'"):
        write_adapter(moved, tmp_path / "b")
    write_adapter(moved, tmp_path / "b", format="peftref")
    assert_same_adapter(read_adapter(tmp_path / "b"), moved)

    with pytest.raises(CheckpointError, match=r"PEFT has no format for svd_rescale"):
        write_adapter(make_adapter("svd_rescale"), tmp_path / "c", format="peft")
    with pytest.raises(CheckpointError, match=r"PEFT's MiSS supports nn.Linear layers only"):
        write_adapter(make_adapter("bat", fan_in_fan_out=True), tmp_path / "d")


def test_refuses_bad_adapter_objects(tmp_path):
    adapter = make_adapter("lora")
    layer = adapter.layers.pop("encoder.layer.0.attention.self.query")
    adapter.layers["renamed"] = layer
    with pytest.raises(CheckpointError, match=r"layers\['renamed'\]: expected a LayerAdapter whose .module is 'renamed'"):
        write_adapter(adapter, tmp_path / "out")
    params = {"A": np.zeros((4, 3), np.int32), "B": np.zeros((2, 4))}
    bad = LayerAdapter("x", "lora", refimpl.make_config("lora", CONFIGS["lora"]), params, (2, 3))
    with pytest.raises(CheckpointError, match=r"module 'x', key 'A': expected a floating-point dtype .* got int32"):
        write_adapter(Adapter({"x": bad}), tmp_path / "out")
    with pytest.raises(CheckpointError, match=r"format must be one of"):
        write_adapter(make_adapter("lora"), tmp_path / "out", format="onnx")
