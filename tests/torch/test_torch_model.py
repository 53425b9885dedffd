"""Whole models: inject / merge / unmerge / unload / enable / disable on a small module tree, a tiny BERT and a tiny GPT-2;
PEFT's target matching; parameter naming and storage; dtype policy; dropout; reference parameter round trips; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model
from transformers.pytorch_utils import Conv1D

import peftref.torch as pt
from peftref import refimpl

#: small configs that fit every 8×8 layer of the tree below (and, for bat/bone/dcft, the 8-wide BERT/GPT-2 layers).
CONFIGS = {
    "lora": {"r": 2, "alpha": 4.0},
    "fourierft": {"n": 12, "alpha": 20.0},
    "sdctft": {"n": 12, "alpha": 2.0, "init": "normal"},
    "dcft": {"d": 2, "k": 1, "scaling": 1.0},
    "bone": {"r": 4},
    "bat": {"r": 4},
    "svd_rescale": {"r": 3},
}
F32_RTOL = 1e-5  # float32 adapters against float32 arithmetic of the same function (see torch_cases.py)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(8, 8)
        self.value = nn.Linear(8, 8)
        self.myquery = nn.Linear(8, 8)  # must not match the suffix "query"
        self.act = nn.Tanh()

    def forward(self, h):
        return self.act(self.query(h) + self.value(h) + self.myquery(h))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(8, 4)

    def forward(self, h):
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def perturb(model: nn.Module, seed: int = 1, scale: float = 0.3) -> None:
    """Give every adapter random trainable values (a stand-in for training), through load_reference_params."""
    rng = np.random.default_rng(seed)
    for _, layer in pt.adapted_layers(model):
        params = layer.reference_params()
        for name in refimpl.get(layer.method).TRAINABLE:
            size = params[name].shape[-1] if layer.method == "bat" else 1  # Bat: keep ‖B_i‖₂ < 1/2
            params[name] = params[name] + scale * rng.standard_normal(params[name].shape) / size
        layer.load_reference_params(params)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = F32_RTOL) -> None:
    scale = max(1.0, float(expected.abs().max()))
    error = float((actual - expected).abs().max())
    assert error <= rtol * scale, f"max error {error:.3g} > {rtol:.1g} · {scale:.3g}"


# --- target matching (PEFT's rules) ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets, expected",
    [
        (["query"], ["blocks.0.query", "blocks.1.query"]),  # suffix at a dot boundary: not "myquery"
        (["head", "blocks.1.value"], ["blocks.1.value", "head"]),  # exact names
        ({"value"}, ["blocks.0.value", "blocks.1.value"]),  # any collection of names
        (r"blocks\.\d+\.(query|value)", ["blocks.0.query", "blocks.0.value", "blocks.1.query", "blocks.1.value"]),
        (r".*query", ["blocks.0.query", "blocks.0.myquery", "blocks.1.query", "blocks.1.myquery"]),  # regex: full match
    ],
)
def test_target_matching_follows_peft(targets, expected):
    model = pt.inject(make_net(), "lora", CONFIGS["lora"], targets)
    assert [name for name, _ in pt.adapted_layers(model)] == expected


def test_target_matching_agrees_with_peft_itself():
    from peft.tuners.tuners_utils import check_target_module_exists

    names = [name for name, _ in make_net().named_modules() if name]
    for targets in (["query"], ["head", "blocks.1.value"], r"blocks\.\d+\.(query|value)", "query", ["lue"]):
        peft_config = type("Config", (), {"target_modules": targets, "target_parameters": None})()
        ours = {name for name, _ in pt.adapted_layers(_inject_or_empty(targets))}
        theirs = {name for name in names if check_target_module_exists(peft_config, name)}
        assert ours == theirs, targets


def _inject_or_empty(targets) -> nn.Module:
    try:
        return pt.inject(make_net(), "lora", CONFIGS["lora"], targets)
    except ValueError:
        return make_net()


@pytest.mark.parametrize("targets", [["qurey"], "query", ["uery"]])
def test_non_matching_targets_raise_naming_them(targets):
    model = make_net()
    with pytest.raises(ValueError, match="matched no module") as err:
        pt.inject(model, "lora", CONFIGS["lora"], targets)
    assert repr(targets) in str(err.value) and "blocks.0.query" in str(err.value)  # names the targets and what exists
    assert not list(pt.adapted_layers(model))


def test_matching_a_non_linear_module_raises_and_changes_nothing():
    model = make_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=r"blocks\.0\.act: target is a Tanh"):
        pt.inject(model, "lora", CONFIGS["lora"], ["query", "act"])
    assert not list(pt.adapted_layers(model)) and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shape_refused_by_the_method_names_the_module():
    with pytest.raises(ValueError, match=r"head: bat: config field 'r' = 3 must divide"):
        pt.inject(make_net(), "bat", {"r": 3}, ["head"])


@pytest.mark.parametrize(
    "targets, error, message",
    [
        ([], ValueError, "target_modules is empty"),
        ("(", ValueError, "not a valid regular expression"),
        (3, TypeError, "regex string or a collection"),
    ],
)
def test_bad_target_modules(targets, error, message):
    with pytest.raises(error, match=message):
        pt.inject(make_net(), "lora", CONFIGS["lora"], targets)


def test_inject_twice_and_model_helpers_without_adapters_raise():
    model = pt.inject(make_net(), "lora", CONFIGS["lora"], ["query"])
    with pytest.raises(ValueError, match="already holds peftref adapters"):
        pt.inject(model, "lora", CONFIGS["lora"], ["value"])
    for helper in (pt.merge, pt.unmerge, pt.unload, pt.enable_adapters, pt.disable_adapters):
        with pytest.raises(ValueError, match="holds no peftref adapters"):
            helper(make_net())


def test_unknown_method_and_bad_config():
    with pytest.raises(ValueError, match="unknown method 'lorra'"):
        pt.inject(make_net(), "lorra", {}, ["query"])
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['rank'\]"):
        pt.inject(make_net(), "lora", {"rank": 2}, ["query"])
    with pytest.raises(TypeError, match="lora: config must be a refimpl.lora.Config"):
        pt.inject(make_net(), "lora", refimpl.get("bone").Config(r=2), ["query"])


# --- the model life cycle ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_inject_merge_unmerge_unload_enable_disable(method):
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    original = make_net()
    with torch.no_grad():
        y_original = original(x)
    model = pt.inject(make_net(), method, CONFIGS[method], r"blocks\.\d+\.(query|value)|head", rng=7)
    perturb(model)
    assert {p.requires_grad for n, p in model.named_parameters() if ".base_layer." in n or ".myquery." in n} == {False}
    trainable = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(refimpl.get(method).TRAINABLE)
    with torch.no_grad():
        y_adapted = model(x)
        assert not torch.allclose(y_adapted, y_original)

        with pt.adapters_disabled(model):
            assert torch.equal(model(x), y_original)
        assert_close(model(x), y_adapted)

        pt.merge(model)
        assert all(layer.merged for _, layer in pt.adapted_layers(model))
        assert_close(model(x), y_adapted)
        with pt.adapters_disabled(model):  # disabling a merged layer unmerges it; the context merges it again
            assert_close(model(x), y_original)
        assert all(layer.merged for _, layer in pt.adapted_layers(model))
        assert_close(model(x), y_adapted)

        pt.unmerge(model)
        assert_close(model(x), y_adapted)
        pt.disable_adapters(model)
        assert torch.allclose(model(x), y_original, rtol=0, atol=1e-6)  # unmerged weights, float32 rounding of W' − ΔW
        pt.enable_adapters(model)
        assert_close(model(x), y_adapted)

        pt.merge(model)
        unloaded = pt.unload(model)
        assert not list(pt.adapted_layers(unloaded))
        assert type(unloaded.blocks[0].query) is nn.Linear and type(unloaded.head) is nn.Linear
        assert_close(unloaded(x), y_adapted)  # the merged weights stay


def test_unload_unmerged_restores_the_base_layers():
    base = make_net()
    query = base.blocks[0].query
    model = pt.inject(base, "fourierft", CONFIGS["fourierft"], ["query"])
    unloaded = pt.unload(model)
    assert unloaded.blocks[0].query is query and torch.equal(query.weight, make_net().blocks[0].query.weight)


def test_unload_of_a_wrapped_layer_returns_the_base_layer():
    linear = nn.Linear(8, 8)
    assert pt.unload(pt.wrap(linear, "lora", CONFIGS["lora"])) is linear


def test_merge_and_unmerge_state_errors():
    layer = pt.wrap(nn.Linear(8, 8), "lora", CONFIGS["lora"])
    with pytest.raises(ValueError, match="lora layer is not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(ValueError, match="lora layer is already merged"):
        layer.merge()
    with pytest.raises(ValueError, match="merged; unmerge it before loading"):
        layer.load_reference_params(layer.reference_params())
    layer.unmerge()
    layer.enabled = False
    with pytest.raises(ValueError, match="adapters are disabled"):
        layer.merge()


def test_model_level_refusals_name_the_module_and_change_nothing():
    model = pt.inject(make_net(), "bat", {"r": 4}, ["query", "value"])
    layer = model.blocks[1].query
    params = layer.reference_params()
    params["B"][0] = -np.eye(4)  # I + B_0 = 0: this layer cannot be unmerged
    layer.load_reference_params(params)
    pt.merge(model)
    weights = {name: l.base_layer.weight.detach().clone() for name, l in pt.adapted_layers(model)}
    for helper in (pt.unmerge, pt.disable_adapters):
        with pytest.raises(ValueError, match=r"^blocks\.1\.query: bat: cannot unmerge: I \+ B\[0\]"):
            helper(model)
        assert all(l.merged and l.enabled and torch.equal(l.base_layer.weight, weights[n]) for n, l in pt.adapted_layers(model))
    with pytest.raises(ValueError, match=r"^blocks\.0\.query: bat layer is already merged"):
        pt.merge(model)


def test_bat_unmerge_refuses_a_singular_block_and_keeps_the_merged_weight():
    layer = pt.wrap(nn.Linear(8, 8), "bat", {"r": 4})
    params = layer.reference_params()
    params["B"][1] = -np.eye(4)  # I + B_1 = 0
    layer.load_reference_params(params)
    layer.merge()
    merged = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match=r"I \+ B\[1\] \(output rows 4\.\.7\) is singular or ill-conditioned"):
        layer.unmerge()
    assert layer.merged and torch.equal(layer.base_layer.weight, merged)


# --- storage, names, dtypes, reference parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_parameters_and_buffers_use_spec_names(method):
    reference = refimpl.get(method)
    layer = pt.wrap(nn.Linear(8, 8), method, CONFIGS[method])
    assert layer.method == method and isinstance(layer.config, reference.Config)
    assert {n for n, _ in layer.named_parameters()} == set(reference.TRAINABLE) | {"base_layer.weight", "base_layer.bias"}
    assert {n for n, _ in layer.named_buffers()} == set(reference.FROZEN)
    assert all(type(getattr(layer, n)) is nn.Parameter for n in reference.TRAINABLE)
    assert set(layer.state_dict()) == set(reference.TRAINABLE) | set(reference.FROZEN) | {"base_layer.weight", "base_layer.bias"}
    params = layer.reference_params()
    assert set(params) == set(reference.TRAINABLE) | set(reference.FROZEN)
    assert {k: v.shape for k, v in params.items()} == reference.param_shapes((8, 8), layer.config)
    assert all(v.dtype == (np.int64 if k == "indices" else np.float64) for k, v in params.items())


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_init_matches_the_reference_init_from_the_real_weight(method):
    """inject draws with one numpy generator from `rng`, layer after layer: exactly the reference init on each real W."""
    model = pt.inject(make_net(), method, CONFIGS[method], ["query", "head"], rng=123)
    rng = np.random.default_rng(123)
    config = refimpl.make_config(method, CONFIGS[method])
    for _, layer in pt.adapted_layers(model):
        expected = refimpl.get(method).init(layer.weight_matrix().detach().double().numpy(), config, rng)
        actual = layer.reference_params()
        for name, value in expected.items():  # float32 storage of the float64 draws
            np.testing.assert_allclose(actual[name], value, rtol=2**-24, atol=0)


def test_the_same_rng_gives_the_same_adapters():
    a = pt.inject(make_net(), "lora", CONFIGS["lora"], ["query"], rng=5)
    b = pt.inject(make_net(), "lora", CONFIGS["lora"], ["query"], rng=5)
    c = pt.inject(make_net(), "lora", CONFIGS["lora"], ["query"], rng=6)
    assert torch.equal(a.blocks[1].query.A, b.blocks[1].query.A)
    assert not torch.equal(a.blocks[1].query.A, c.blocks[1].query.A)


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_load_reference_params_round_trip_in_place(method):
    layer = pt.wrap(nn.Linear(8, 8), method, CONFIGS[method])
    other = pt.wrap(nn.Linear(8, 8), method, CONFIGS[method], rng=99)
    perturb(other, seed=3)
    parameters = {n: p for n, p in layer.named_parameters()}
    layer.load_reference_params(other.reference_params())
    assert {n: p for n, p in layer.named_parameters()}.keys() == parameters.keys()
    assert all(parameters[n] is p for n, p in layer.named_parameters())  # same objects: optimizer state stays valid
    for name, value in other.reference_params().items():
        np.testing.assert_array_equal(layer.reference_params()[name], value)


def test_load_reference_params_rejects_bad_arrays_naming_the_key():
    layer = pt.wrap(nn.Linear(8, 6), "fourierft", {"n": 4})
    good = layer.reference_params()
    with pytest.raises(ValueError, match=r"missing \['spectrum'\]"):
        layer.load_reference_params({"indices": good["indices"]})
    with pytest.raises(ValueError, match=r"parameter 'spectrum' must have shape \(4,\), got \(5,\)"):
        layer.load_reference_params({**good, "spectrum": np.zeros(5)})
    with pytest.raises(ValueError, match="duplicate location"):
        layer.load_reference_params({**good, "indices": np.zeros((2, 4), dtype=np.int64)})
    with pytest.raises(ValueError, match=r"column \(v\) values must be in \[0, 8\)"):
        layer.load_reference_params({**good, "indices": np.array([[0, 1, 2, 3], [0, 1, 2, 8]])})
    with pytest.raises(ValueError, match="non-finite"):
        layer.load_reference_params({**good, "spectrum": np.full(4, np.nan)})
    assert all(np.array_equal(layer.reference_params()[k], v) for k, v in good.items())  # nothing half-loaded


def test_params_with_negative_or_transposed_strides_are_accepted():
    """Regression: torch.as_tensor refuses NumPy views with negative strides (e.g. singular values sorted with [::-1])."""
    rng = np.random.default_rng(0)
    U, V = (np.linalg.qr(rng.standard_normal((8, 3)))[0] for _ in range(2))
    sigma0 = np.sort(rng.uniform(0.5, 2.0, 3))[::-1]
    params = {"s": sigma0, "b": np.ones(8)[::-1], "U": np.asfortranarray(U), "V": V[::-1], "sigma0": sigma0}
    layer = pt.wrap(nn.Linear(8, 8), "svd_rescale", {"r": 3}, params)
    layer.load_reference_params(params)
    for name, value in params.items():
        np.testing.assert_allclose(layer.reference_params()[name], value, rtol=2**-24)


def test_wrap_rejects_unsupported_layers_and_bad_dropout():
    with pytest.raises(TypeError, match="can only wrap torch.nn.Linear or transformers' Conv1D, got Conv2d"):
        pt.wrap(nn.Conv2d(2, 2, 1), "lora", CONFIGS["lora"])
    for dropout in (-0.1, 1.5, "0.1"):
        with pytest.raises(ValueError, match="dropout must be a probability in"):
            pt.wrap(nn.Linear(8, 8), "lora", CONFIGS["lora"], dropout=dropout)


def test_state_dict_round_trip_between_models():
    x = torch.randn(3, 8)
    model = pt.inject(make_net(), "sdctft", CONFIGS["sdctft"], ["query", "value"], rng=1)
    perturb(model)
    fresh = pt.inject(make_net(), "sdctft", CONFIGS["sdctft"], ["query", "value"], rng=2)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("base_dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_dtype_policy(base_dtype):
    adapter_dtype = torch.float64 if base_dtype == torch.float64 else torch.float32
    layer = pt.wrap(nn.Linear(8, 8, dtype=base_dtype), "fourierft", CONFIGS["fourierft"])
    assert layer.spectrum.dtype == adapter_dtype and layer.indices.dtype == torch.int64 and layer.adapter_dtype == adapter_dtype
    assert layer(torch.randn(2, 8, dtype=base_dtype)).dtype == base_dtype
    assert layer.delta_weight().dtype == adapter_dtype
    layer.merge()
    assert layer.base_layer.weight.dtype == base_dtype


def test_low_precision_parameters_are_upcast_for_the_arithmetic():
    """After model.to(bfloat16) the adapter arithmetic still runs in float32 (torch has no bf16 FFT on the CPU)."""
    layer = pt.wrap(nn.Linear(8, 8), "fourierft", CONFIGS["fourierft"]).to(torch.bfloat16)
    assert layer.spectrum.dtype == torch.bfloat16 and layer.adapter_dtype == torch.float32
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    y = layer(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and layer.spectrum.grad.dtype == torch.bfloat16


# --- dropout on the adapter branch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_dropout_applies_to_the_adapter_input_only(method):
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    layer = pt.wrap(nn.Linear(8, 8), method, CONFIGS[method], dropout=0.5)
    perturb(layer)
    plain = pt.wrap(layer.base_layer, method, layer.config, layer.reference_params())
    with torch.no_grad():
        layer.eval()
        assert torch.equal(layer(x), plain(x))  # eval: no dropout
        layer.train()
        torch.manual_seed(11)
        y = layer(x)
        torch.manual_seed(11)
        dropped = torch.nn.functional.dropout(x, 0.5, training=True)  # the same mask, drawn the same way
        expected = layer.base_layer(x) + dropped @ layer.delta_weight().T  # base(x) + dropout(x) ΔWᵀ
        assert_close(y, expected)
        full = pt.wrap(layer.base_layer, method, layer.config, layer.reference_params(), dropout=1.0).train()
        assert torch.allclose(full(x), layer.base_layer(x), rtol=0, atol=1e-6)  # p = 1 drops the whole update


# --- real transformers models ------------------------------------------------------------------------------------------


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    return BertModel(config).eval()


@pytest.mark.parametrize("method", ["fourierft", "lora", "bat"])
def test_tiny_bert(method):
    tokens = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_original = tiny_bert()(tokens).last_hidden_state
    model = pt.inject(tiny_bert(), method, CONFIGS[method], ["query", "value"], rng=0)
    assert [n for n, _ in pt.adapted_layers(model)] == [
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    ]
    perturb(model)
    with torch.no_grad():
        y_adapted = model(tokens).last_hidden_state
        assert not torch.allclose(y_adapted, y_original, atol=1e-3)
        with pt.adapters_disabled(model):
            assert torch.equal(model(tokens).last_hidden_state, y_original)
        pt.merge(model)
        assert_close(model(tokens).last_hidden_state, y_adapted)
        unloaded = pt.unload(model)
        assert type(unloaded.encoder.layer[0].attention.self.query) is nn.Linear
        assert_close(unloaded(tokens).last_hidden_state, y_adapted)


@pytest.mark.parametrize("method", refimpl.METHODS)
def test_conv1d_is_the_transposed_linear(method):
    """A GPT-2 Conv1D holding Wᵀ and an nn.Linear holding W give the same adapted layer."""
    torch.manual_seed(0)
    linear = nn.Linear(8, 8)
    conv = Conv1D(8, 8)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.T)
        conv.bias.copy_(linear.bias)
    a = pt.wrap(linear, method, CONFIGS[method], rng=4)
    b = pt.wrap(conv, method, CONFIGS[method], rng=4)  # init reads W in the (d_out, d_in) layout: same parameters
    perturb(a)
    b.load_reference_params(a.reference_params())
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert_close(b(x), a(x))
        assert_close(b.delta_weight(), a.delta_weight())
        a.merge()
        b.merge()
        assert b.base_layer.weight.shape == (8, 8) and torch.equal(b.weight_matrix(), b.base_layer.weight.T)
        assert_close(b.base_layer.weight.T, a.base_layer.weight)


def test_tiny_gpt2_conv1d():
    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2)).eval()
    tokens = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    pt.inject(model, "bone", {"r": 4}, ["c_attn", "c_proj"], rng=0)
    names = [n for n, _ in pt.adapted_layers(model)]
    assert names == [f"h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_proj")]
    assert all(layer.fan_in_fan_out and layer.shape[1] == 16 or layer.shape[1] == 64 for _, layer in pt.adapted_layers(model))
    perturb(model)
    with torch.no_grad():
        y_adapted = model(tokens).last_hidden_state
        pt.merge(model)
        assert_close(model(tokens).last_hidden_state, y_adapted)
        unloaded = pt.unload(model)
        assert type(unloaded.h[0].attn.c_attn) is Conv1D
        assert_close(unloaded(tokens).last_hidden_state, y_adapted)


def test_zero_initialised_adapters_do_not_change_the_model():
    """Every method whose init gives ΔW = 0 leaves a float32 model's output bit-identical (DCFT inits to small noise)."""
    x = torch.randn(3, 8)
    with torch.no_grad():
        y = make_net()(x)
        for method in ("lora", "fourierft", "sdctft", "bone", "bat", "svd_rescale"):
            has_init = "init" in refimpl.get(method).Config.__dataclass_fields__
            config = {**CONFIGS[method], "init": "zeros"} if has_init else CONFIGS[method]
            model = pt.inject(make_net(), method, config, ["query", "value", "head"])
            assert torch.equal(model(x), y), method
