r"""Adapting whole models: wrap one layer, inject into every targeted layer, merge, unmerge, unload, enable, disable.

Target names are matched as PEFT does (``peft.tuners.tuners_utils.check_target_module_exists``):

  - a **string** is a regular expression that must match the whole module name (``re.fullmatch``);
  - a **list** (or any collection of strings) matches a module whose name equals an entry, or ends with ``"." + entry``:
    ``"query"`` matches ``encoder.layer.0.attention.self.query`` but not ``encoder.layer.0.attention.self.myquery``.

One model holds one peftref adapter at a time (``unload`` before injecting another).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Collection, Iterator

import torch
from torch import nn

from .. import refimpl
from ..refimpl import _common
from .bat import BatLayer
from .bone import BoneLayer
from .dcft import DCFTLayer
from .fourierft import FourierFTLayer
from .layer import AdaptedLayer, as_config, base_shape, check_base, is_conv1d, is_supported_base
from .lora import LoRALayer
from .sdctft import SDCTFTLayer
from .svd_rescale import SVDRescaleLayer

#: method id -> layer class, one per method of refimpl.METHODS.
LAYERS: dict[str, type[AdaptedLayer]] = {
    cls.method: cls for cls in (LoRALayer, FourierFTLayer, SDCTFTLayer, DCFTLayer, BoneLayer, BatLayer, SVDRescaleLayer)
}


def layer_class(method: str) -> type[AdaptedLayer]:
    """The adapted-layer class of a method id."""
    refimpl.get(method)  # names the valid ids on a typo
    return LAYERS[method]


def wrap(base_layer: nn.Module, method: str, config, params=None, *, rng=None, dropout: float = 0.0) -> AdaptedLayer:
    """Wrap one ``nn.Linear`` or GPT-2 ``Conv1D`` with `method`'s adapter.

    `params` are SPEC.md-named arrays (NumPy or anything ``np.asarray`` reads); without them the reference's
    ``init(W, config, rng)`` draws them from the layer's real weight (so sDCTFT's indices and SVD re-scaling's factors
    come from W). The base layer's parameters are frozen.
    """
    cls = layer_class(method)
    config = as_config(method, config)
    check_base(method, base_layer)
    if params is None:
        weight = base_layer.weight.detach().to("cpu", torch.float64).numpy()  # storage layout
        W = weight.T if is_conv1d(base_layer) else weight  # (d_out, d_in)
        params = refimpl.get(method).init(W, config, _common.as_generator(rng))
    return cls(base_layer, config, params, dropout=dropout)


def adapted_layers(model: nn.Module) -> Iterator[tuple[str, AdaptedLayer]]:
    """(name, layer) for every adapted layer of `model`, in module order; the name is the adapted module's path."""
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLayer):
            yield name, module


def _matcher(target_modules):
    """A predicate on module names, following PEFT's rules (regex string: full match; collection: name or suffix)."""
    if isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error as err:
            raise ValueError(f"target_modules {target_modules!r} is not a valid regular expression: {err}") from None
        return lambda name: pattern.fullmatch(name) is not None
    if not isinstance(target_modules, Collection) or not all(isinstance(t, str) for t in target_modules):
        raise TypeError(f"target_modules must be a regex string or a collection of module names, got {target_modules!r}")
    if not target_modules:
        raise ValueError("target_modules is empty; name at least one module (exact name or suffix), or give a regex string")
    targets = set(target_modules)
    return lambda name: name in targets or any(name.endswith("." + t) for t in targets)


def inject(model: nn.Module, method: str, config, target_modules, *, rng=None, dropout: float = 0.0) -> nn.Module:
    """Replace every targeted ``nn.Linear``/``Conv1D`` of `model` by `method`'s adapted layer, in place; return `model`.

    Parameters are drawn by the reference ``init`` from the layers' real weights, with one ``numpy`` generator made from
    `rng` (a Generator, an int seed, or None for seed 0) shared by the layers in module order. Afterwards only adapter
    parameters require gradients (PEFT's behaviour). Nothing changes if any targeted layer is refused.
    """
    config = as_config(method, config)
    matches = _matcher(target_modules)
    if any(True for _ in adapted_layers(model)):
        raise ValueError("model already holds peftref adapters; call peftref.torch.unload(model) before injecting again")
    targets = [(name, module) for name, module in model.named_modules() if name and matches(name)]
    if not targets:
        linear = [name for name, module in model.named_modules() if name and is_supported_base(module)]
        shown = ", ".join(linear[:8]) + (", …" if len(linear) > 8 else "")
        raise ValueError(
            f"target_modules {target_modules!r} matched no module of {type(model).__name__}; "
            f"its Linear/Conv1D layers are: {shown or 'none'}"
        )
    reference = refimpl.get(method)
    for name, module in targets:
        if not is_supported_base(module):
            raise TypeError(f"{name}: target is a {type(module).__name__}; {method} adapts only torch.nn.Linear and Conv1D")
        try:
            reference.param_shapes(base_shape(module), config)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    generator = _common.as_generator(rng)
    layers = {name: wrap(module, method, config, rng=generator, dropout=dropout) for name, module in targets}
    model.requires_grad_(False)  # the new layers are not in the model yet: their adapter parameters stay trainable
    for name, layer in layers.items():
        model.set_submodule(name, layer)
    return model


def _layers_or_fail(model: nn.Module, action: str) -> list[tuple[str, AdaptedLayer]]:
    layers = list(adapted_layers(model))
    if not layers:
        raise ValueError(f"cannot {action}: {type(model).__name__} holds no peftref adapters (use peftref.torch.inject)")
    return layers


def _check_all(layers: list[tuple[str, AdaptedLayer]], check: Callable[[AdaptedLayer], None]) -> None:
    """Run `check` on every layer before anything changes; a refusal names the module and leaves the model as it was."""
    for name, layer in layers:
        try:
            check(layer)
        except ValueError as err:
            raise ValueError(f"{name or type(layer).__name__}: {err}") from None


def merge(model: nn.Module) -> nn.Module:
    """Merge every adapted layer: W ← W + ΔW(W), rounded once to the base dtype."""
    layers = _layers_or_fail(model, "merge")
    _check_all(layers, lambda layer: layer.check_merge())
    for _, layer in layers:
        layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    """Undo :func:`merge` on every adapted layer."""
    layers = _layers_or_fail(model, "unmerge")
    _check_all(layers, lambda layer: layer.check_unmerge())
    for _, layer in layers:
        layer.unmerge()
    return model


def unload(model: nn.Module) -> nn.Module:
    """Put the base layers back (with merged weights where merged) and return the model without adapters.

    Base parameters keep ``requires_grad=False`` as :func:`inject` left them (PEFT's ``unload`` does the same).
    """
    layers = _layers_or_fail(model, "unload")
    if isinstance(model, AdaptedLayer):
        return model.base_layer
    for name, layer in layers:
        model.set_submodule(name, layer.base_layer)
    return model


def enable_adapters(model: nn.Module) -> nn.Module:
    """Turn the adapters on (the default after inject)."""
    for _, layer in _layers_or_fail(model, "enable adapters"):
        layer.enabled = True
    return model


def disable_adapters(model: nn.Module) -> nn.Module:
    """Turn the adapters off: every adapted layer computes its base layer only. Merged layers are unmerged first."""
    layers = _layers_or_fail(model, "disable adapters")
    _check_all([(name, layer) for name, layer in layers if layer.merged], lambda layer: layer.check_unmerge())
    for _, layer in layers:
        if layer.merged:
            layer.unmerge()
        layer.enabled = False
    return model


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    """``with adapters_disabled(model):`` runs the base model; afterwards every layer is enabled (and merged) as before."""
    states = [(layer, layer.enabled, layer.merged) for _, layer in _layers_or_fail(model, "disable adapters")]
    disable_adapters(model)
    try:
        yield model
    finally:
        for layer, enabled, merged in states:
            layer.enabled = enabled
            if merged:
                layer.merge()
