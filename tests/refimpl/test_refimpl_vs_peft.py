"""The reference against Hugging Face PEFT 0.21.2 itself: LoRA (incl. rsLoRA), FourierFT (with PEFT's own locations), MiSS
default (Bone), mini and bat, on a small torch model wrapped by ``peft.get_peft_model``, with random adapter parameters.

Each PEFT adapter layer is compared with the reference on the same numbers (PEFT's float32 parameters, upcast exactly to
float64): ΔW (for MiSS default/mini, whose PEFT code only produces the full merged weight, the merged weight), the adapted
forward, ``merge()`` and ``unmerge()``.

Tolerance: PEFT computes in float32 (unit roundoff 6e-8). Every quantity here is a sum of at most a few dozen products, or an
FFT of at most 160 points (≤ 8 butterfly levels), so PEFT's result is within a few hundred float32 ulps of the exact value:
we allow 1e-5 relative to the largest |expected| entry (≈ 170 ulps), while a wrong layout, index, scale or sign is O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import FourierFTConfig, LoraConfig, MissConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from refimpl_strategies import assert_close
from torch import nn

from peftref.refimpl import bat, bone, fourierft, lora

LINEARS = [(12, 20), (20, 8), (8, 16)]  # (d_in, d_out) of each nn.Linear: tall, wide, square-ish; d_in = 20 and 8 are not multiples of 3
TARGETS = [str(i) for i in range(len(LINEARS))]
FLOAT32 = 1e-5


def peft_layers(config, seed: int = 0) -> list[BaseTunerLayer]:
    """The adapter layers of nn.Sequential(*LINEARS) wrapped by PEFT with `config`."""
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(d_in, d_out) for d_in, d_out in LINEARS])
    peft_model = get_peft_model(model, config)
    return [module for module in peft_model.modules() if isinstance(module, BaseTunerLayer)]


def randomize(parameter: torch.Tensor, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Overwrite a PEFT parameter with random float32 values; return them as float64 (exactly)."""
    values = (scale * rng.standard_normal(tuple(parameter.shape))).astype(np.float32)
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(values))
    return values.astype(np.float64)


def float64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().astype(np.float64)


def lora_adapter(use_rslora: bool):
    config = LoraConfig(r=4, lora_alpha=6, use_rslora=use_rslora, target_modules=TARGETS)

    def ours(layer, rng):
        cfg = lora.Config(r=4, alpha=6.0, use_rslora=use_rslora)
        assert layer.scaling["default"] == pytest.approx(cfg.scaling, rel=1e-15)
        params = {"A": randomize(layer.lora_A["default"].weight, rng), "B": randomize(layer.lora_B["default"].weight, rng)}
        return lora, cfg, params

    return config, ours


def fourierft_adapter(seed: int):
    config = FourierFTConfig(n_frequency=100, scaling=150.0, random_loc_seed=seed, target_modules=TARGETS)

    def ours(layer, rng):
        indices = layer.indices["default"].numpy()
        assert np.array_equal(indices, fourierft.peft_locations(seed, layer.out_features, layer.in_features, 100))
        cfg = fourierft.Config(n=100, alpha=layer.fourierft_scaling["default"], seed=seed)
        return fourierft, cfg, {"spectrum": randomize(layer.fourierft_spectrum["default"], rng), "indices": indices}

    return config, ours


def miss_adapter(init_weights, r: int, mini_r: int | None = None):
    config = MissConfig(r=r, init_weights=init_weights, mini_r=mini_r, target_modules=TARGETS)

    def ours(layer, rng):
        block = layer.miss_block["default"]
        if init_weights == "bat":  # entries below 0.5/r: I + B_i well-conditioned (PEFT's unmerge inverts it in float32)
            return bat, bat.Config(r=r), {"B": randomize(block, rng, scale=0.2 / r)}
        return bone, bone.Config(r=r, mini_r=mini_r), {"D": randomize(block, rng)}

    return config, ours


ADAPTERS = {
    "lora": lora_adapter(use_rslora=False),
    "rslora": lora_adapter(use_rslora=True),
    "fourierft-seed777": fourierft_adapter(seed=777),
    "fourierft-seed0": fourierft_adapter(seed=0),
    "miss-default": miss_adapter(True, r=3),  # r = 3 does not divide d_in = 20 or 8: the partial last chunk
    "miss-mini": miss_adapter("mini", r=3, mini_r=4),
    "bat": miss_adapter("bat", r=4),
}


def peft_delta(layer, W: torch.Tensor) -> torch.Tensor:
    """PEFT's ΔW; for MiSS default/mini PEFT only computes the merged weight, so take the difference."""
    if hasattr(layer, "miss_fn"):
        if layer.miss_fn == "bat":
            return layer.get_delta_weight("default", W.clone())
        return layer.get_delta_weight_miss("default", W.clone()) - W
    return layer.get_delta_weight("default")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_delta_forward_merge_unmerge_match_peft(adapter):
    config, ours = ADAPTERS[adapter]
    rng = np.random.default_rng(0)
    for layer in peft_layers(config):
        base = layer.get_base_layer()
        W, bias = float64(base.weight), float64(base.bias)
        m, cfg, params = ours(layer, rng)

        delta = m.delta_weight(W, params, cfg)
        assert np.abs(delta).max() > 0.01  # the random parameters produce a real update
        assert_close(float64(peft_delta(layer, base.weight.detach())), delta, rel=FLOAT32)

        x = rng.standard_normal((2, 3, W.shape[1])).astype(np.float32)
        with torch.no_grad():
            y_peft = float64(layer(torch.from_numpy(x)))
        assert_close(y_peft, m.forward(x.astype(np.float64), W, params, cfg, bias=bias), rel=FLOAT32)

        layer.merge()
        merged = float64(base.weight)
        assert_close(merged, m.merge(W, params, cfg), rel=FLOAT32)
        layer.unmerge()
        assert_close(float64(base.weight), m.unmerge(merged, params, cfg), rel=FLOAT32)
        assert_close(float64(base.weight), W, rel=FLOAT32)


def test_two_bat_adapters_merge_in_sequence_like_peft():
    """PEFT merges several Bat adapters one after another, each seeing the weight merged so far; so does the reference."""
    config, ours = ADAPTERS["bat"]
    rng = np.random.default_rng(1)
    for layer in peft_layers(config):
        layer.update_layer("second", 4, config=config)  # a second Bat adapter on the same layer
        base = layer.get_base_layer()
        W = float64(base.weight)
        _, cfg, first = ours(layer, rng)
        second = {"B": randomize(layer.miss_block["second"], rng, scale=0.2 / 4)}
        layer.merge(adapter_names=["default", "second"])
        merged = float64(base.weight)
        expected = bat.merge(bat.merge(W, first, cfg), second, cfg)
        assert_close(merged, expected, rel=FLOAT32)
        assert np.abs(expected - (W + bat.delta_weight(W, first, cfg) + bat.delta_weight(W, second, cfg))).max() > 1e-4
        layer.unmerge()  # "second" first, then "default"
        assert_close(float64(base.weight), bat.unmerge(bat.unmerge(merged, second, cfg), first, cfg), rel=FLOAT32)
