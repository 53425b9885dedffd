"""peftref.torch as a candidate (``--impl torch``, ``torch-cpu``, ``torch-cuda``).

Each call wraps a fresh ``torch.nn.Linear`` (in the dtype of the inputs, on the chosen device) with
``peftref.torch.wrap(base, method, config, params)``. ΔW is the layer's ``delta_weight()``; forward calls the layer; merge
and unmerge are the layer's own (unmerge starts from a layer marked merged on the merged weight); vjp is torch autograd
through the layer's forward, in the dtype of the inputs; ``num_trainable`` counts the layer's trainable parameters;
``locations`` are the indices a FourierFT layer wrapped without parameters draws for the seed.
"""

from __future__ import annotations

import numpy as np

from ... import refimpl


class TorchCandidate:
    methods = frozenset(refimpl.METHODS)

    def __init__(self, device: str | None = None):
        try:
            import torch

            import peftref.torch as pt
        except ImportError as err:
            raise ValueError(f"--impl torch needs torch (pip install 'peftref[torch]'): {err}") from None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--impl torch-cuda: torch sees no CUDA device")
        self.torch, self.pt, self.device = torch, pt, torch.device(device)
        self.name = f"torch ({device})"

    def _tensor(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def _numpy(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    def _layer(self, method, W, params, config, bias=None):
        torch = self.torch
        d_out, d_in = W.shape
        dtype = torch.float64 if W.dtype == np.float64 else torch.float32
        base = torch.nn.Linear(d_in, d_out, bias=bias is not None, dtype=dtype, device=self.device)
        with torch.no_grad():
            base.weight.copy_(self._tensor(W))
            if bias is not None:
                base.bias.copy_(self._tensor(bias))
        return self.pt.wrap(base, method, config, params)

    def delta_weight(self, method, W, params, config):
        return self._numpy(self._layer(method, W, params, config).delta_weight())

    def forward(self, method, x, W, params, config, bias=None):
        with self.torch.no_grad():
            return self._numpy(self._layer(method, W, params, config, bias)(self._tensor(x)))

    def merge(self, method, W, params, config):
        layer = self._layer(method, W, params, config)
        layer.merge()
        return self._numpy(layer.base_layer.weight)

    def unmerge(self, method, W_merged, params, config):
        layer = self._layer(method, W_merged, params, config)
        layer.merged = True  # the base layer holds a merged weight
        layer.unmerge()
        return self._numpy(layer.base_layer.weight)

    def vjp(self, method, x, W, params, config, gy):
        layer = self._layer(method, W, params, config)
        x = self._tensor(x).requires_grad_(True)
        layer(x).backward(self._tensor(gy))
        return self._numpy(x.grad), {name: self._numpy(getattr(layer, name).grad) for name in refimpl.get(method).TRAINABLE}

    def num_trainable(self, method, shape, config):
        d_out, d_in = shape
        layer = self.pt.wrap(self.torch.nn.Linear(d_in, d_out), method, config, rng=0)
        return sum(p.numel() for p in layer.parameters() if p.requires_grad)

    def locations(self, seed, d_out, d_in, n):
        layer = self.pt.wrap(self.torch.nn.Linear(d_in, d_out, bias=False), "fourierft", {"n": n, "seed": seed, "init": "zeros"})
        return layer.reference_params()["indices"]
