"""The reference itself as a candidate (``--impl reference``): it must pass every check, at any dtype."""

from __future__ import annotations

from ... import refimpl
from ...refimpl import fourierft


class ReferenceCandidate:
    """peftref.refimpl behind the candidate protocol: the config dict becomes the method's Config."""

    name = "reference"
    methods = frozenset(refimpl.METHODS)

    @staticmethod
    def _resolve(method: str, config: dict):
        return refimpl.get(method), refimpl.make_config(method, config)

    def delta_weight(self, method, W, params, config):
        module, cfg = self._resolve(method, config)
        return module.delta_weight(W, params, cfg)

    def forward(self, method, x, W, params, config, bias=None):
        module, cfg = self._resolve(method, config)
        return module.forward(x, W, params, cfg, bias)

    def merge(self, method, W, params, config):
        module, cfg = self._resolve(method, config)
        return module.merge(W, params, cfg)

    def unmerge(self, method, W_merged, params, config):
        module, cfg = self._resolve(method, config)
        return module.unmerge(W_merged, params, cfg)

    def vjp(self, method, x, W, params, config, gy):
        module, cfg = self._resolve(method, config)
        return module.vjp(x, W, params, cfg, gy)

    def num_trainable(self, method, shape, config):
        module, cfg = self._resolve(method, config)
        return module.num_trainable(shape, cfg)

    def locations(self, seed, d_out, d_in, n):
        return fourierft.peft_locations(seed, d_out, d_in, n)
