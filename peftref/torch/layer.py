r"""The adapted layer: what every method's ``nn.Module`` shares.

An adapted layer wraps a frozen base layer — ``nn.Linear`` (weight W, (d_out, d_in)) or transformers' GPT-2 ``Conv1D``
(weight Wᵀ, (d_in, d_out)) — and adds the method's update without ever changing the base layer's forward:

    y = base(x) + δ(dropout(x)),        δ(x) = x ΔWᵀ in the method's efficient form        (additive methods)
    y = x (W + ΔW(W))ᵀ + b                                                                  (Bat: ΔW depends on W)

Storage. Trainable arrays are ``nn.Parameter``s and frozen arrays (indices, SVD factors) are buffers, each under its
SPEC.md name (``spectrum``, ``A``, ``B``, ``C``, ``D``, ``s``, ``b``; ``indices``, ``U``, ``V``, ``sigma0``), always in
our (d_out, d_in) layout; the Conv1D transpose is handled only where the base weight is read or written.

Dtypes. Adapter arithmetic runs in float64 when the adapter parameters are float64 and in float32 otherwise: a float64 base
gets float64 adapters, every other base (float32, bf16, fp16) float32 adapters. The adapter branch casts its input to that
dtype and its result back to the base output's dtype. Merging computes W + ΔW in float64 if the base or the adapter is
float64, else in float32, and rounds to the base dtype once (round to nearest even, ``Tensor.copy_``).

Merged layers and disabled adapters both forward through the untouched base layer.
"""

from __future__ import annotations

import abc
import sys
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .. import refimpl
from ..refimpl import _common, _spectral

#: the only index array among the frozen parameters (int64; every other array is floating point).
INDEX_NAMES = ("indices",)


def conv1d_type() -> type | None:
    """transformers' GPT-2 ``Conv1D`` class if transformers is loaded (a Conv1D can only exist then), else None."""
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    cls = conv1d_type()
    return cls is not None and isinstance(module, cls)


def is_supported_base(module: nn.Module) -> bool:
    """nn.Linear or GPT-2 Conv1D."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def check_base(method: str, module: nn.Module) -> None:
    if not is_supported_base(module):
        raise TypeError(f"{method}: can only wrap torch.nn.Linear or transformers' Conv1D, got {type(module).__name__}")


def base_shape(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of a supported base layer, whatever its storage layout."""
    d0, d1 = module.weight.shape
    return (d1, d0) if is_conv1d(module) else (d0, d1)


def as_config(method: str, config):
    """The reference's Config for `method`: a Config instance, or a plain dict turned into one."""
    reference = refimpl.get(method)
    if isinstance(config, reference.Config):
        return config
    if isinstance(config, Mapping):
        return refimpl.make_config(method, dict(config))
    raise TypeError(f"{method}: config must be a refimpl.{method}.Config or a dict of its fields, got {type(config).__name__}")


def check_reference_params(method: str, params, shape: tuple[int, int], config) -> dict[str, np.ndarray]:
    """Validate SPEC.md-named arrays for a (d_out, d_in) layer: keys, shapes, finite values, distinct indices; return them
    as contiguous float64 (indices int64) arrays."""
    reference = refimpl.get(method)
    expected = reference.param_shapes(shape, config)
    checked = _common.check_params(method, params, expected, index_names=INDEX_NAMES)
    if "indices" in checked:
        _spectral.check_indices(method, checked["indices"], shape)
    return {name: np.ascontiguousarray(value) for name, value in checked.items()}  # torch refuses negative strides


class AdaptedLayer(nn.Module, abc.ABC):
    """Base class of every method's layer. Subclasses set ``method`` and implement the abstract methods below."""

    method: str = ""

    def __init__(self, base_layer: nn.Module, config, params: Mapping[str, np.ndarray], *, dropout: float = 0.0):
        super().__init__()
        check_base(self.method, base_layer)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{self.method}: dropout must be a probability in [0, 1], got {dropout!r}")
        self.config = as_config(self.method, config)
        self.shape = base_shape(base_layer)  # (d_out, d_in)
        checked = check_reference_params(self.method, params, self.shape, self.config)
        self.base_layer = base_layer.requires_grad_(False)
        self.fan_in_fan_out = is_conv1d(base_layer)  # base weight stored as Wᵀ (d_in, d_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True
        reference = refimpl.get(self.method)
        self.trainable_names, self.frozen_names = reference.TRAINABLE, reference.FROZEN  # SPEC.md names
        weight = base_layer.weight
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        for name in self.trainable_names:
            self.register_parameter(name, nn.Parameter(torch.as_tensor(checked[name], dtype=dtype, device=weight.device)))
        for name in self.frozen_names:
            buffer_dtype = torch.int64 if name in INDEX_NAMES else dtype
            self.register_buffer(name, torch.as_tensor(checked[name], dtype=buffer_dtype, device=weight.device))

    # --- what a method implements -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The forward with the adapter active and unmerged."""

    @abc.abstractmethod
    def merged_weight(self, W: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """W + ΔW(W) for the base weight W (d_out, d_in) and adapter tensors p, both in the merge dtype."""

    @abc.abstractmethod
    def unmerged_weight(self, W_merged: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """The inverse of :meth:`merged_weight`."""

    @abc.abstractmethod
    def delta_weight(self) -> torch.Tensor:
        """ΔW (d_out, d_in) in the adapter dtype, differentiable with respect to the trainable parameters."""

    # --- names, dtypes and the base weight ----------------------------------------------------------------------------

    def names(self) -> tuple[str, ...]:
        """SPEC.md names of the adapter arrays: trainable, then frozen."""
        return self.trainable_names + self.frozen_names

    @property
    def adapter_dtype(self) -> torch.dtype:
        """float64 if the trainable parameters are float64, else float32 (bf16/fp16 parameters are upcast to it)."""
        first = getattr(self, self.trainable_names[0])
        return torch.float64 if first.dtype == torch.float64 else torch.float32

    @property
    def merge_dtype(self) -> torch.dtype:
        """float64 if the base or the adapter is float64, else float32."""
        wide = self.base_layer.weight.dtype == torch.float64 or self.adapter_dtype == torch.float64
        return torch.float64 if wide else torch.float32

    def tensors(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The adapter arrays by SPEC.md name, floating ones in `dtype` (default: the adapter dtype); indices stay int64."""
        dtype = dtype or self.adapter_dtype
        out = {}
        for name in self.names():
            tensor = getattr(self, name)
            out[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        return out

    def weight_matrix(self) -> torch.Tensor:
        """The base weight in (d_out, d_in) layout (a view; transposed for Conv1D)."""
        weight = self.base_layer.weight
        return weight.T if self.fan_in_fan_out else weight

    @torch.no_grad()
    def _write_weight_matrix(self, W: torch.Tensor) -> None:
        """Overwrite the base weight in place with W (d_out, d_in), rounded once to its dtype."""
        self.base_layer.weight.copy_(W.T if self.fan_in_fan_out else W)

    @property
    def dropout_active(self) -> bool:
        return self.training and isinstance(self.dropout, nn.Dropout)

    # --- forward, merge, unmerge ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged or not self.enabled:
            return self.base_layer(x)
        return self.adapted_forward(x)

    def check_merge(self) -> None:
        """Raise ValueError if :meth:`merge` would refuse."""
        if self.merged:
            raise ValueError(f"{self.method} layer is already merged")
        if not self.enabled:
            raise ValueError(f"{self.method} layer: adapters are disabled; enable them before merging")

    def check_unmerge(self) -> None:
        """Raise ValueError if :meth:`unmerge` would refuse."""
        if not self.merged:
            raise ValueError(f"{self.method} layer is not merged")

    def merge(self) -> None:
        """W ← W + ΔW(W), computed in the merge dtype and rounded once to the base dtype."""
        self.check_merge()
        with torch.no_grad():
            dtype = self.merge_dtype
            self._write_weight_matrix(self.merged_weight(self.weight_matrix().to(dtype), self.tensors(dtype)))
        self.merged = True

    def unmerge(self) -> None:
        """Restore the base weight from the merged one (exact up to the base dtype's rounding)."""
        self.check_unmerge()
        with torch.no_grad():
            dtype = self.merge_dtype
            self._write_weight_matrix(self.unmerged_weight(self.weight_matrix().to(dtype), self.tensors(dtype)))
        self.merged = False

    # --- the reference's view ----------------------------------------------------------------------------------------

    def reference_params(self) -> dict[str, np.ndarray]:
        """SPEC.md-named NumPy arrays, trainable and frozen: float64 (indices int64), on the CPU."""
        out = {}
        for name in self.names():
            tensor = getattr(self, name).detach()
            dtype = torch.float64 if tensor.is_floating_point() else torch.int64
            out[name] = tensor.to("cpu", dtype).numpy()
        return out

    def load_reference_params(self, params: Mapping[str, np.ndarray]) -> None:
        """Copy SPEC.md-named arrays into the parameters and buffers in place (optimizer references stay valid)."""
        if self.merged:
            raise ValueError(f"{self.method} layer is merged; unmerge it before loading parameters")
        checked = check_reference_params(self.method, params, self.shape, self.config)
        with torch.no_grad():
            for name in self.names():
                getattr(self, name).copy_(torch.from_numpy(checked[name]))

    def extra_repr(self) -> str:
        d_out, d_in = self.shape
        state = f"merged={self.merged}, enabled={self.enabled}"
        return f"method={self.method}, config={self.config}, d_out={d_out}, d_in={d_in}, {state}"


class AdditiveLayer(AdaptedLayer):
    """A method whose ΔW does not depend on W: y = base(x) + δ(dropout(x)), merge(W) = W + ΔW."""

    @abc.abstractmethod
    def delta_forward(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """x ΔWᵀ for tokens x (T, d_in) in the method's efficient form -> (T, d_out)."""

    @abc.abstractmethod
    def delta_matrix(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """ΔW (d_out, d_in) from the adapter tensors p."""

    def adapted_forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., d_out) in the base dtype
        h = self.dropout(x.to(self.adapter_dtype))
        # (T, d_in); no view of a 2-D x, so that autograd can sum the two parts of ∂L/∂x in place (PEFT's peak memory)
        h = h if h.dim() == 2 else h.reshape(-1, self.shape[1])
        return y + self.delta_forward(h, self.tensors()).reshape(y.shape).to(y.dtype)

    def merged_weight(self, W, p):
        return W + self.delta_matrix(p)

    def unmerged_weight(self, W_merged, p):
        return W_merged - self.delta_matrix(p)

    def delta_weight(self) -> torch.Tensor:
        return self.delta_matrix(self.tensors())
