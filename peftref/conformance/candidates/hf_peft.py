"""Hugging Face PEFT as a candidate (``--impl peft``): PEFT's own layer classes, driven through their public methods.

Each call builds a fresh ``torch.nn.Linear`` in the dtype of the inputs (float64 inputs: a float64 model) holding W and the
bias, wraps it in PEFT's layer class (``peft.tuners.lora.Linear``, ``FourierFTLinear``, ``MissLinear`` with
``init_weights`` True / "mini" / "bat"), and loads the parameters with ``load_state_dict`` under PEFT's keys. Operations:
ΔW is PEFT's ``get_delta_weight`` (MiSS default/mini: ``get_delta_weight_miss`` on a zero weight, which returns W + ΔW);
forward calls the layer; merge / unmerge are the layer's, unmerge starting from a layer marked merged on the merged weight;
vjp is torch autograd through the layer's forward; ``num_trainable`` counts PEFT's adapter parameters; ``locations`` are the
indices PEFT's FourierFT layer draws for the seed.

PEFT regenerates FourierFT locations from ``random_loc_seed``: a case whose indices are not PEFT's locations for its seed
cannot be expressed in PEFT and is skipped (:class:`Unsupported`). sDCTFT, DCFT and SVD re-scaling are not in PEFT.
"""

from __future__ import annotations

import numpy as np

from ..protocol import Unsupported

#: SPEC parameter name -> PEFT state-dict key of the layer, per method.
PEFT_KEYS = {
    "lora": {"A": "lora_A.default.weight", "B": "lora_B.default.weight"},
    "fourierft": {"spectrum": "fourierft_spectrum.default"},
    "bone": {"D": "miss_block.default"},
    "bat": {"B": "miss_block.default"},
}


class PeftCandidate:
    name = "peft"
    methods = frozenset(PEFT_KEYS)

    def __init__(self):
        try:
            import peft
            import torch
        except ImportError as err:
            raise ValueError(f"--impl peft needs torch and peft (pip install peft==0.21.2): {err}") from None
        from peft.tuners.fourierft.layer import FourierFTLinear
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.miss.layer import MissLinear

        self.torch, self.peft = torch, peft
        self.classes = {"lora": LoraLinear, "fourierft": FourierFTLinear, "miss": MissLinear}

    # -- building a PEFT layer
    def _adapter(self, method: str, base, config: dict):
        """PEFT's layer for `method` around `base` (PEFT validates the config here, raising ValueError)."""
        peft = self.peft
        if method == "lora":
            r, alpha = config["r"], config["alpha"]
            peft_config = peft.LoraConfig(r=r, lora_alpha=alpha, use_rslora=config.get("use_rslora", False))
            return self.classes["lora"](base, "default", peft_config, r=r, lora_alpha=alpha)
        if method == "fourierft":
            n = config["n"]
            peft_config = peft.FourierFTConfig(n_frequency=n, scaling=config["alpha"], random_loc_seed=config["seed"])
            return self.classes["fourierft"](base, "default", peft_config, n_frequency=n)
        if method == "bone":
            mini_r = config.get("mini_r")
            init = True if mini_r is None else "mini"
            peft_config = peft.MissConfig(r=config["r"], init_weights=init, mini_r=1 if mini_r is None else mini_r)
        else:
            peft_config = peft.MissConfig(r=config["r"], init_weights="bat")
        return self.classes["miss"](base, "default", peft_config, r=config["r"])

    def _tensor(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array))

    def _layer(self, method: str, W: np.ndarray, params: dict, config: dict, bias: np.ndarray | None = None):
        torch = self.torch
        d_out, d_in = W.shape
        base = torch.nn.Linear(d_in, d_out, bias=bias is not None, dtype=torch.float64 if W.dtype == np.float64 else torch.float32)
        with torch.no_grad():
            base.weight.copy_(self._tensor(W))
            if bias is not None:
                base.bias.copy_(self._tensor(bias))
        layer = self._adapter(method, base, config)
        if method == "fourierft" and not np.array_equal(layer.indices["default"].numpy(), params["indices"]):
            raise Unsupported(f"PEFT regenerates FourierFT locations from random_loc_seed={config['seed']}; these indices are not them")
        state = {PEFT_KEYS[method][name]: self._tensor(params[name]) for name in PEFT_KEYS[method]}
        layer.load_state_dict(state, strict=False)
        return layer

    # -- the candidate operations
    def delta_weight(self, method, W, params, config):
        layer = self._layer(method, W, params, config)
        with self.torch.no_grad():
            if method in ("lora", "fourierft"):
                delta = layer.get_delta_weight("default")
            elif method == "bat":
                delta = layer.get_delta_weight("default", layer.get_base_layer().weight.clone())
            else:  # MiSS default / mini: get_delta_weight_miss returns W + ΔW; on W = 0 that is ΔW
                delta = layer.get_delta_weight_miss("default", self.torch.zeros_like(layer.get_base_layer().weight))
        return delta.numpy()

    def forward(self, method, x, W, params, config, bias=None):
        layer = self._layer(method, W, params, config, bias)
        with self.torch.no_grad():
            return layer(self._tensor(x)).numpy()

    def merge(self, method, W, params, config):
        layer = self._layer(method, W, params, config)
        with self.torch.no_grad():
            layer.merge()
        return layer.get_base_layer().weight.detach().numpy()

    def unmerge(self, method, W_merged, params, config):
        layer = self._layer(method, W_merged, params, config)
        layer.merged_adapters.append("default")  # the layer now holds a merged weight
        with self.torch.no_grad():
            layer.unmerge()
        return layer.get_base_layer().weight.detach().numpy()

    def vjp(self, method, x, W, params, config, gy):
        layer = self._layer(method, W, params, config)
        x = self._tensor(x).requires_grad_(True)
        layer(x).backward(self._tensor(gy))
        named = dict(layer.named_parameters())
        return x.grad.numpy(), {name: named[key].grad.numpy() for name, key in PEFT_KEYS[method].items()}

    def num_trainable(self, method, shape, config):
        d_out, d_in = shape
        layer = self._adapter(method, self.torch.nn.Linear(d_in, d_out, device="meta"), config)
        return sum(p.numel() for name, p in layer.named_parameters() if name.split(".")[0] in layer.adapter_layer_names)

    def locations(self, seed, d_out, d_in, n):
        peft_config = self.peft.FourierFTConfig(n_frequency=n, random_loc_seed=seed)
        layer = self.classes["fourierft"](self.torch.nn.Linear(d_in, d_out, device="meta"), "default", peft_config, n_frequency=n)
        return layer.indices["default"].numpy()
