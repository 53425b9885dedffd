"""``peftref inspect``: what an adapter checkpoint holds — method, modules, shapes, parameter counts — and a plot.

Counts: *trainable* is the sum of the method's trainable arrays (refimpl's ``num_trainable``); *frozen* arrays (indices,
SVD factors) are listed apart. PEFT's ``get_nb_trainable_parameters`` also counts ``modules_to_save`` (whole modules
trained alongside), so that total is shown too. For scale, the adapter is compared with LoRA at r = 8 on the same modules,
and with the rank at which LoRA would have the same number of trainable parameters: total / Σ (d_in + d_out).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .. import refimpl
from ..adapter import Adapter
from ..demo import format_table
from . import read_adapter, resolve_module
from .base import base_shapes, base_weight, describe_base

LORA_REFERENCE_RANK = 8


def summarize(adapter: Adapter, base=None) -> dict:
    """Everything ``inspect`` prints, as plain data (what ``--json`` writes)."""
    modules = []
    for module, layer in sorted(adapter.layers.items()):
        frozen = sum(int(np.asarray(layer.params[name]).size) for name in refimpl.get(layer.method).FROZEN)
        modules.append(
            {
                "module": module,
                "shape": list(layer.shape),
                "fan_in_fan_out": layer.fan_in_fan_out,
                "config": dataclasses.asdict(layer.config),
                "trainable": layer.num_trainable(),
                "frozen": frozen,
            }
        )
    trainable = sum(row["trainable"] for row in modules)
    saved = {module: sum(int(a.size) for a in tensors.values()) for module, tensors in sorted(adapter.modules_to_save.items())}
    widths = sum(row["shape"][0] + row["shape"][1] for row in modules)  # Σ (d_out + d_in)
    return {
        "path": adapter.source,
        "format": f"PEFT {adapter.peft_type}" if adapter.peft_type else "peftref",
        "method": next(iter(adapter.layers.values())).method,
        "base": None if base is None else describe_base(base),
        "modules": modules,
        "trainable": trainable,
        "frozen": sum(row["frozen"] for row in modules),
        "modules_to_save": saved,
        "peft_trainable": trainable + sum(saved.values()),
        "lora_r8_trainable": LORA_REFERENCE_RANK * widths,
        "ratio_to_lora_r8": trainable / (LORA_REFERENCE_RANK * widths),
        "lora_equal_rank": trainable / widths,
    }


def format_summary(summary: dict) -> str:
    """The human-readable report."""
    rows = [
        {**row, "size": "×".join(map(str, row["shape"])), "settings": ", ".join(f"{k}={v}" for k, v in row["config"].items())}
        for row in summary["modules"]
    ]
    lines = [
        f"adapter: {summary['path']} ({summary['format']}, method {summary['method']})",
        f"base:    {summary['base'] or 'none given'}",
        "",
        format_table(
            rows,
            [
                ("module", "module", "s"), ("size", "d_out×d_in", "s"), ("settings", "config", "s"),
                ("trainable", "trainable", ",d"), ("frozen", "frozen", ",d"),
            ],  # fmt: skip
        ),
        "",
        f"trainable: {summary['trainable']:,} in {len(rows)} module{'s' * (len(rows) != 1)}"
        + (f" (+ {summary['frozen']:,} frozen: indices, SVD factors)" if summary["frozen"] else ""),
    ]
    if summary["modules_to_save"]:
        saved = ", ".join(f"{module} {count:,}" for module, count in summary["modules_to_save"].items())
        lines.append(f"modules_to_save: {saved}; with them, as PEFT counts: {summary['peft_trainable']:,}")
    lines.append(
        f"LoRA r={LORA_REFERENCE_RANK} on the same modules: {summary['lora_r8_trainable']:,} trainable "
        f"(this adapter: {summary['ratio_to_lora_r8']:.3g}×); equal-parameter LoRA rank: {summary['lora_equal_rank']:.3g}"
    )
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="show what an adapter checkpoint holds", description=__doc__.splitlines()[0])
    parser.add_argument("adapter", metavar="ADAPTER_DIR", help="a PEFT or peftref adapter directory")
    parser.add_argument("--base", help="base model (ONNX file or safetensors weights) for layer shapes and, with --plot of bat, weights")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    parser.add_argument("--plot", metavar="OUT.png", type=Path, help="draw one module's ΔW (and spectrum, for FourierFT/sDCTFT)")
    parser.add_argument("--module", metavar="NAME", help="show (and plot) only this module; a unique dot-suffix is enough")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    adapter = read_adapter(args.adapter, base=args.base)
    if args.module:
        name = resolve_module(args.module, adapter.layers, where=f"the adapter {args.adapter}")
        adapter = dataclasses.replace(adapter, layers={name: adapter.layers[name]})
    layer = adapter.layers[min(adapter.layers)]  # the module --plot draws
    W = _base_weight(layer, args.base) if args.plot and layer.method == "bat" else None
    summary = summarize(adapter, args.base)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if args.plot:
        try:
            from .plot import plot_layer
        except ImportError:
            raise ValueError("--plot needs matplotlib: pip install 'peftref[plot]'") from None
        plot_layer(layer, args.plot, W)
        if not args.json:
            print(f"wrote {args.plot}")
    return 0


def _base_weight(layer, base) -> np.ndarray:
    """W (d_out, d_in) of a layer from the base file: Bat's ΔW_ij = (W_ij + I) B_i depends on it."""
    if base is None:
        raise ValueError("--plot of a bat layer needs the base weights: pass --base (ONNX or safetensors)")
    stored = base_weight(base, resolve_module(layer.module, base_shapes(base), where=describe_base(base)))
    return stored.T if layer.fan_in_fan_out else stored  # read_adapter checked the shape
