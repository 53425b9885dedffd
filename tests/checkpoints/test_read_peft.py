"""Reading adapters that PEFT 0.21.2 wrote itself: every module's ΔW equals PEFT's own, configs and counts agree.

Tolerance. PEFT computes ΔW in float32 from float32 parameters; we compute in float64 from the same float32 values, so
the difference is PEFT's float32 rounding alone. Each ΔW entry is a short sum (LoRA: r ≤ 8 products; FourierFT: a
float32 ifft2 of at most 128×32; Bat: r = 4 products) whose float32 error is a few eps32 = 1.19e-7 times the entries'
magnitude; measured: at most 1.4 eps32 · max|ΔW| over all cases here. We require |ours − PEFT| ≤ 1e-6 · max|ΔW|
(8.4 eps32): a factor 6 above what was seen, far below any layout or scaling mistake (which is O(max|ΔW|)).
Bone is a pure copy (ΔW[o, i] = D[i mod r, o]), so PEFT's full weight W + ΔW is compared with ours rounded to float32:
exact equality. FourierFT locations are compared bit for bit with PEFT's own ``indices`` buffers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from checkpoint_models import tiny_model

from peftref.checkpoints import base_shapes, read_adapter
from peftref.checkpoints.cli import summarize

PREFIX = "base_model.model."
REL_TOL = 1e-6  # see the module docstring


def peft_layers(peft_model, attribute: str) -> dict:
    """{module: PEFT tuner layer} for the layers holding `attribute` (e.g. "lora_A")."""
    modules = peft_model.named_modules()
    return {name[len(PREFIX) :]: m for name, m in modules if hasattr(m, attribute) and "default" in getattr(m, attribute)}


def assert_close_to_peft(ours: np.ndarray, peft: torch.Tensor, what: str) -> None:
    peft = peft.detach().double().numpy()
    assert ours.shape == peft.shape, what
    scale = np.abs(peft).max()
    assert scale > 0, f"{what}: PEFT's ΔW is zero, the test would prove nothing"
    assert np.abs(ours - peft).max() <= REL_TOL * scale, f"{what}: max |ours − PEFT| = {np.abs(ours - peft).max():.3g}"


@pytest.mark.parametrize("name", ["bert_lora", "gpt2_lora", "llama_rslora", "minilm_lora"])
def test_lora_delta_weights_equal_peft(peft_cases, name):
    case = peft_cases[name]
    adapter = read_adapter(case.directory, base=case.base_dir)
    layers = peft_layers(case.peft_model, "lora_A")
    assert adapter.peft_type == "LORA" and sorted(adapter.layers) == sorted(layers)
    for module, peft_layer in layers.items():
        ours = adapter.layers[module]
        assert ours.config.r == peft_layer.r["default"] and ours.config.alpha == peft_layer.lora_alpha["default"], module
        assert ours.config.scaling == pytest.approx(peft_layer.scaling["default"], rel=1e-15), module
        peft_dW = peft_layer.get_delta_weight("default")  # Conv1D (fan_in_fan_out): stored (d_in, d_out)
        assert ours.fan_in_fan_out == peft_layer.fan_in_fan_out
        assert_close_to_peft(ours.delta_weight(), peft_dW.T if peft_layer.fan_in_fan_out else peft_dW, module)


def test_lora_rank_and_alpha_patterns_resolve_as_in_peft(peft_cases):
    """The configured patterns, each resolved by PEFT's get_pattern_key rule (last component, regex, anchored name)."""
    layers = read_adapter(peft_cases["bert_lora"].directory).layers
    ranks = {m: layer.config.r for m, layer in layers.items()}
    alphas = {m: layer.config.alpha for m, layer in layers.items()}
    assert ranks["encoder.layer.0.attention.self.value"] == ranks["encoder.layer.1.attention.self.value"] == 2
    assert ranks["encoder.layer.1.attention.output.dense"] == 6 and ranks["encoder.layer.0.attention.output.dense"] == 4
    assert alphas["encoder.layer.1.attention.self.query"] == 3 and alphas["encoder.layer.0.attention.self.query"] == 8
    assert alphas["encoder.layer.0.intermediate.dense"] == 5 and alphas["encoder.layer.1.intermediate.dense"] == 8


def test_rslora_scaling_is_alpha_over_sqrt_r(peft_cases):
    layer = next(iter(read_adapter(peft_cases["llama_rslora"].directory).layers.values()))
    assert layer.config.use_rslora and layer.config.scaling == 16 / 2.0


def test_modules_to_save_are_read_with_their_values(peft_cases):
    case = peft_cases["bert_lora"]
    adapter = read_adapter(case.directory)
    wrapper = case.peft_model.base_model.model.pooler.dense.modules_to_save["default"]
    assert sorted(adapter.modules_to_save) == ["pooler.dense"]
    for name, tensor in wrapper.state_dict().items():
        np.testing.assert_array_equal(adapter.modules_to_save["pooler.dense"][name], tensor.numpy())


@pytest.mark.parametrize("name", ["bert_fourierft", "gpt2_fourierft"])
def test_fourierft_delta_weights_and_locations_equal_peft(peft_cases, name):
    case = peft_cases[name]
    adapter = read_adapter(case.directory, base=case.base_dir)
    layers = peft_layers(case.peft_model, "fourierft_spectrum")
    assert adapter.peft_type == "FOURIERFT" and sorted(adapter.layers) == sorted(layers)
    for module, peft_layer in layers.items():
        ours = adapter.layers[module]
        assert ours.config.n == peft_layer.fourierft_n_frequency["default"], module
        np.testing.assert_array_equal(ours.params["indices"], peft_layer.indices["default"].numpy())
        assert_close_to_peft(ours.delta_weight(), peft_layer.get_delta_weight("default"), module)


def test_fourierft_n_frequency_pattern_resolves_as_in_peft(peft_cases):
    """"value" matches by its last component; a full module name (no dot before it) only by PEFT's exact-name fallback;
    "encoder.*query" matches nothing in FourierFT (it would in LoRA: there the prefix group is optional)."""
    case = peft_cases["bert_fourierft"]
    n = {m: layer.config.n for m, layer in read_adapter(case.directory, base=case.base_dir).layers.items()}
    assert n["encoder.layer.0.attention.self.value"] == n["encoder.layer.1.attention.self.value"] == 20
    assert n["encoder.layer.0.intermediate.dense"] == 30 and n["encoder.layer.1.intermediate.dense"] == 50
    assert n["encoder.layer.1.output.dense"] == 40 and n["encoder.layer.0.output.dense"] == 50
    assert n["encoder.layer.0.attention.self.query"] == n["encoder.layer.1.attention.self.query"] == 50


@pytest.mark.parametrize("name", ["bert_bone", "bert_mini", "llama_bone"])
def test_bone_weights_equal_peft(peft_cases, name):
    case = peft_cases[name]
    adapter = read_adapter(case.directory, base=case.base_dir)
    layers = peft_layers(case.peft_model, "miss_block")
    assert adapter.peft_type == "MISS" and sorted(adapter.layers) == sorted(layers)
    for module, peft_layer in layers.items():
        ours = adapter.layers[module]
        assert ours.method == "bone" and (ours.config.mini_r is None) == (name != "bert_mini"), module
        W = peft_layer.get_base_layer().weight.detach()
        peft_merged = peft_layer.get_delta_weight_miss("default", W.clone())  # PEFT returns the full weight W + ΔW
        ours_merged = ours.merge(W.double().numpy()).astype(np.float32)
        np.testing.assert_array_equal(ours_merged, peft_merged.detach().numpy(), err_msg=module)
        assert np.abs(ours.delta_weight()).max() > 0


def test_bat_delta_weights_equal_peft(peft_cases):
    case = peft_cases["bert_bat"]
    adapter = read_adapter(case.directory, base=case.base_dir)
    layers = peft_layers(case.peft_model, "miss_block")
    assert sorted(adapter.layers) == sorted(layers)
    for module, peft_layer in layers.items():
        W = peft_layer.get_base_layer().weight.detach()
        assert adapter.layers[module].method == "bat"
        assert_close_to_peft(adapter.layers[module].delta_weight(W.double().numpy()), peft_layer.get_delta_weight("default", W), module)


@pytest.mark.parametrize(
    "name", ["bert_lora", "gpt2_lora", "llama_rslora", "bert_fourierft", "gpt2_fourierft", "bert_bone", "bert_mini", "bert_bat"]
)
def test_trainable_counts_equal_peft(peft_cases, name):
    """inspect's peft_trainable = adapter + modules_to_save = PEFT's get_nb_trainable_parameters()[0]."""
    case = peft_cases[name]
    summary = summarize(read_adapter(case.directory, base=case.base_dir))
    assert summary["peft_trainable"] == case.peft_model.get_nb_trainable_parameters()[0]
    adapter_params = [p for n, p in case.peft_model.named_parameters() if p.requires_grad and "modules_to_save" not in n]
    assert summary["trainable"] == sum(p.numel() for p in adapter_params)


def test_peft_outputs_equal_base_model_with_our_merged_weights(peft_cases):
    """End to end on the real MiniLM: PEFT's adapted model and the base model with our merged weights agree."""
    case = peft_cases["minilm_lora"]
    adapter = read_adapter(case.directory, base=case.base_dir)
    merged = tiny_model("minilm")
    state = merged.state_dict()
    for module, layer in adapter.layers.items():
        W = state[f"{module}.weight"]
        state[f"{module}.weight"] = torch.from_numpy(layer.merge(W.double().numpy()).astype(np.float32))
    merged.load_state_dict(state)
    ids = torch.tensor([[1, 2045, 2003, 1037, 3231, 1012, 2]])
    with torch.no_grad():
        expected = case.peft_model(input_ids=ids).last_hidden_state
        actual = merged(input_ids=ids).last_hidden_state
    # float32 forward of 6 layers on O(1) activations: both runs round differently only in the merged weights (1 ulp)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=2e-5, rtol=0)
    assert not np.allclose(actual.numpy(), tiny_model("minilm")(input_ids=ids).last_hidden_state.detach().numpy(), atol=1e-3)


def test_every_kind_of_base_gives_the_same_shapes(peft_cases, tmp_path):
    """A save_pretrained directory, its model.safetensors, a sharded copy, an ONNX model (external data not loaded) and a
    mapping with a wrapper prefix all fix the same FourierFT layer shapes."""
    import onnx
    from onnx import helper, numpy_helper
    from safetensors.numpy import load_file

    case = peft_cases["bert_fourierft"]
    tiny_model("bert").save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    weights = load_file(case.base_dir / "model.safetensors")
    graph = helper.make_graph([], "base", [], [], initializer=[numpy_helper.from_array(v, name=k) for k, v in weights.items()])
    onnx.save(helper.make_model(graph), tmp_path / "base.onnx", save_as_external_data=True, location="base.onnx.data", size_threshold=0)
    (tmp_path / "base.onnx.data").unlink()  # proves the shapes come from the graph alone
    prefixed = {f"bert.{m}": s for m, s in base_shapes(case.base_dir).items()}
    bases = [case.base_dir, case.base_dir / "model.safetensors", tmp_path / "sharded", tmp_path / "base.onnx", prefixed]
    shapes = [{m: layer.shape for m, layer in read_adapter(case.directory, base=b).layers.items()} for b in bases]
    assert all(s == shapes[0] for s in shapes) and shapes[0]["encoder.layer.0.intermediate.dense"] == (48, 32)


@pytest.mark.parametrize("name", ["bert_bone", "bert_bat"])
def test_legacy_bone_checkpoints_read_like_miss(peft_cases, tmp_path, name):
    """PEFT ≤ 0.17's BONE type (``bone_block``, init_weights true/false/"bat"; PEFT 0.21.2 cannot write it any more):
    the MiSS checkpoint rewritten in that layout reads as the same adapter."""
    import json

    from safetensors.numpy import load_file, save_file

    case = peft_cases[name]
    config = json.loads((case.directory / "adapter_config.json").read_text())
    config = {k: v for k, v in config.items() if k not in ("mini_r", "miss_dropout")} | {"peft_type": "BONE"}
    (tmp_path / "bone").mkdir()
    (tmp_path / "bone" / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(case.directory / "adapter_model.safetensors")
    save_file({k.replace("miss_block", "bone_block"): v for k, v in tensors.items()}, tmp_path / "bone" / "adapter_model.safetensors")
    legacy, miss = read_adapter(tmp_path / "bone", base=case.base_dir), read_adapter(case.directory, base=case.base_dir)
    assert legacy.peft_type == "BONE" and sorted(legacy.layers) == sorted(miss.layers)
    for module, layer in miss.layers.items():
        other = legacy.layers[module]
        assert (other.method, other.config, other.shape) == (layer.method, layer.config, layer.shape)
        assert all(np.array_equal(other.params[p], layer.params[p]) for p in layer.params)
