"""fold() on graphs exported by torch 2.13 itself, against the adapted torch model as the ground truth.

Every exporter variant — dynamo (the default) and TorchScript, constant-folded or not, 2-D and 3-D inputs — on an
nn.Linear stack behind a wrapper (graph module paths carry a ``model.`` prefix the adapter does not have); GPT-2's
Conv1D; tied weights; tiny BERT with adapters written by PEFT itself and read with peftref.checkpoints; from_torch.

Tolerance: 1e-5 relative to max |y| — float32 through ≤ 2 small layers or blocks agrees to ~1e-6, while a layout defect
changes the output by O(ΔW) ≈ 1e-1 (the adapters have non-zero "trained" parameters).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from export_cases import layer_adapter, run, torch_export
from torch import nn

import peftref.torch as pt
from peftref import refimpl
from peftref.adapter import Adapter
from peftref.export import fold, from_torch

RTOL = 1e-5


def _close(actual, expected, rtol: float = RTOL) -> None:
    expected = np.asarray(expected, np.float64)
    assert np.abs(np.asarray(actual, np.float64) - expected).max() <= rtol * np.abs(expected).max()


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 8, bias=False))

    def forward(self, x):
        return self.inner(x)


class Wrapper(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model(*args)


def _adapt(model: nn.Module, adapter: Adapter) -> nn.Module:
    """A copy of `model` with peftref.torch layers carrying exactly the adapter's parameters."""
    adapted = copy.deepcopy(model)
    for module, layer in adapter.layers.items():
        adapted.set_submodule(module, pt.wrap(adapted.get_submodule(module), layer.method, layer.config, layer.params))
    return adapted.eval()


def _weight(linear) -> np.ndarray:
    """W (d_out, d_in) of an nn.Linear or Conv1D, float64."""
    W = linear.weight.detach().double().numpy()
    return W.T if type(linear).__name__ == "Conv1D" else W


VARIANTS = [(dynamo, folded, rank) for dynamo in (True, False) for folded in (True, False) for rank in (2, 3)]


@pytest.mark.parametrize("k, dynamo, folded, rank", [(k, *v) for k, v in enumerate(VARIANTS)], ids=[f"{'dynamo' if d else 'torchscript'}-{'folded' if f else 'unfolded'}-{r}d" for d, f, r in VARIANTS])
def test_every_exporter_variant(tmp_path, k, dynamo, folded, rank):
    torch.manual_seed(k)
    base = Stack().eval()
    x = torch.randn((3, 24) if rank == 2 else (2, 5, 24))
    path = torch_export(Wrapper(base), (x,), tmp_path / "base.onnx", dynamo=dynamo, folded=folded, input_names=["x"])
    methods = {"inner.0": refimpl.METHODS[k % 7], "inner.2": "bat", "inner.4": refimpl.METHODS[(k + 3) % 7]}
    rng = np.random.default_rng(k)
    adapter = Adapter({m: layer_adapter(method, m, _weight(base.get_submodule(m)), rng) for m, method in methods.items()})
    report = fold(path, adapter, tmp_path / "out.onnx", progress=False)
    assert all(layer.graph_module == f"model.{layer.module}" for layer in report.layers)
    assert report.verification["passed"] and report.verification["conclusive"]
    with torch.no_grad():
        expected = _adapt(base, adapter)(x).numpy()
    (y,) = run(tmp_path / "out.onnx", {"x": x.numpy()})
    _close(y, expected)


class Hidden(Wrapper):
    """A transformers model as input_ids -> last_hidden_state."""

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).last_hidden_state


class Tied(nn.Module):
    """An embedding, a GPT-2 Conv1D, a Linear, and a head tied to the embedding (as GPT-2's lm_head)."""

    def __init__(self):
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        self.emb = nn.Embedding(50, 16)
        self.c = Conv1D(24, 16)
        nn.init.normal_(self.c.bias)
        self.proj = nn.Linear(24, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(self.proj(torch.tanh(self.c(self.emb(ids)))))


@pytest.mark.parametrize("dynamo, folded", [(True, True), (True, False), (False, True), (False, False)])
def test_conv1d_and_tied_head(tmp_path, dynamo, folded):
    torch.manual_seed(1)
    base = Tied().eval()
    ids = torch.randint(0, 50, (2, 5))
    path = torch_export(base, (ids,), tmp_path / "base.onnx", dynamo=dynamo, folded=folded, input_names=["ids"])
    rng = np.random.default_rng(2)
    adapter = Adapter(
        {
            "c": layer_adapter("lora", "c", _weight(base.c), rng, fan_in_fan_out=True),
            "head": layer_adapter("fourierft", "head", _weight(base.head), rng),
        }
    )
    report = fold(path, adapter, tmp_path / "out.onnx", progress=False)
    layers = {layer.module: layer for layer in report.layers}
    assert layers["c"].layout == "W^T"  # Conv1D stores Wᵀ and multiplies it as is
    # Unfolded, the head reads the embedding's own table through a Transpose: it gets a copy, the Gather keeps W.
    assert layers["head"].shared == (not folded)
    with torch.no_grad():
        expected = _adapt(base, adapter)(ids).numpy()
    (y,) = run(tmp_path / "out.onnx", {"ids": ids.numpy()})
    _close(y, expected)


def _randomize(peft_model) -> None:
    """Non-zero adapter parameters (PEFT's inits make ΔW = 0); small, so Bat's I + B_i stays well-conditioned."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, param in peft_model.named_parameters():
            if param.requires_grad:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))


class HiddenAndPooled(nn.Module):
    """BERT as (input_ids, attention_mask) -> (last_hidden_state, pooler_output), behind a ``model.`` prefix."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def tiny_bert():
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, max_position_embeddings=16)
    return transformers.BertModel(config).eval()


BERT_INPUTS = (torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0)), torch.ones(2, 7, dtype=torch.long))


@pytest.fixture(scope="module")
def bert_exports(tmp_path_factory):
    """Tiny BERT exported once by each exporter: dynamo (folded, weights val_N) and TorchScript (unfolded, Transposes)."""
    directory = tmp_path_factory.mktemp("bert")
    names = ["input_ids", "attention_mask"]
    return {
        "dynamo": torch_export(HiddenAndPooled(tiny_bert()), BERT_INPUTS, directory / "dynamo.onnx", dynamo=True, folded=True, input_names=names),
        "torchscript": torch_export(HiddenAndPooled(tiny_bert()), BERT_INPUTS, directory / "ts.onnx", dynamo=False, folded=False, input_names=names),
    }


def _peft_configs():
    from peft import FourierFTConfig, LoraConfig, MissConfig

    return {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], modules_to_save=["pooler.dense"], rank_pattern={"value": 2}),
        "fourierft": FourierFTConfig(n_frequency=40, scaling=300.0, random_loc_seed=5, target_modules=["query", "key", "intermediate.dense"]),
        "miss": MissConfig(r=6, target_modules=["query", "output.dense"]),
        "bat": MissConfig(r=8, init_weights="bat", target_modules=["value", "intermediate.dense"]),
    }


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", ["lora", "fourierft", "miss", "bat"])
def test_peft_adapters_on_bert(tmp_path, bert_exports, name, exporter):
    from peft import get_peft_model

    peft_model = get_peft_model(tiny_bert(), _peft_configs()[name])
    _randomize(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    report = fold(bert_exports[exporter], tmp_path / "adapter", tmp_path / "out.onnx", progress=False)
    assert report.verification["passed"] and report.verification["conclusive"]
    if name == "lora":
        assert {(s["module"], s["param"]) for s in report.saved} == {("pooler.dense", "weight"), ("pooler.dense", "bias")}
    with torch.no_grad():
        out = peft_model.eval()(input_ids=BERT_INPUTS[0], attention_mask=BERT_INPUTS[1])
    hidden, pooled = run(tmp_path / "out.onnx", {"input_ids": BERT_INPUTS[0].numpy(), "attention_mask": BERT_INPUTS[1].numpy()})
    _close(hidden, out.last_hidden_state.numpy())
    _close(pooled, out.pooler_output.numpy())


@pytest.mark.parametrize("folded", [True, False])
def test_peft_lora_on_gpt2_conv1d(tmp_path, folded):
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=16, use_cache=False)
    base = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(1))
    path = torch_export(Hidden(base), (ids,), tmp_path / "base.onnx", dynamo=True, folded=folded, input_names=["input_ids"])
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=3, lora_alpha=6, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True))
    _randomize(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    report = fold(path, tmp_path / "adapter", tmp_path / "out.onnx", progress=False)
    assert {layer.layout for layer in report.layers} == {"W^T"} and len(report.layers) == 8
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=ids).last_hidden_state.numpy()
    (y,) = run(tmp_path / "out.onnx", {"input_ids": ids.numpy()})
    _close(y, expected)


def test_from_torch_peft_model(tmp_path):
    from peft import get_peft_model

    peft_model = get_peft_model(tiny_bert(), _peft_configs()["lora"])
    _randomize(peft_model)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    inputs = {"input_ids": BERT_INPUTS[0], "attention_mask": BERT_INPUTS[1]}
    report = from_torch(peft_model, inputs, tmp_path / "bert.onnx")
    assert report["merged_by"] == "peft" and report["exporter"] == "dynamo"
    assert all(v.equal(before[k]) for k, v in peft_model.state_dict().items())  # the caller's model is untouched
    assert [o["max_rel_error"] < RTOL for o in report["outputs"]] == [True, True]
    hidden, pooled = run(tmp_path / "bert.onnx", {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        out = peft_model.eval()(**inputs)
    _close(hidden, out.last_hidden_state.numpy())
    _close(pooled, out.pooler_output.numpy())


def test_from_torch_peftref_model_torchscript(tmp_path):
    torch.manual_seed(4)
    model = Stack().eval()
    rng = np.random.default_rng(4)
    adapter = Adapter({m: layer_adapter(method, m, _weight(model.get_submodule(m)), rng) for m, method in (("inner.0", "dcft"), ("inner.2", "svd_rescale"))})
    adapted = _adapt(model, adapter)
    x = torch.randn(4, 24)
    report = from_torch(adapted, (x,), tmp_path / "stack.onnx", dynamo=False, input_names=["x"])
    assert report["merged_by"] == "peftref" and report["exporter"] == "torchscript"
    assert len(list(pt.adapted_layers(adapted))) == 2  # still adapted, unmerged
    (y,) = run(tmp_path / "stack.onnx", {"x": x.numpy()})
    with torch.no_grad():
        _close(y, adapted(x).numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.onnx"]


class Twins(nn.Module):
    """Two Linear layers with equal weights: the TorchScript exporter keeps one tensor for both."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


@pytest.mark.parametrize("folded", [True, False])
def test_deduplicated_equal_weights_are_separated(tmp_path, folded):
    torch.manual_seed(6)
    base = Twins().eval()
    x = torch.randn(2, 3, 16)
    path = torch_export(base, (x,), tmp_path / "base.onnx", dynamo=False, folded=folded, input_names=["x"])
    rng = np.random.default_rng(6)
    adapter = Adapter({"b": layer_adapter("bat", "b", _weight(base.b), rng)})
    report = fold(path, adapter, tmp_path / "out.onnx", progress=False)
    (layer,) = report.layers
    assert layer.shared  # the exporter made `a` and `b` read one initializer: `b` gets a copy, `a` keeps the original
    with torch.no_grad():
        expected = _adapt(base, adapter)(x).numpy()
    (y,) = run(tmp_path / "out.onnx", {"x": x.numpy()})
    _close(y, expected)
