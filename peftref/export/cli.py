"""``peftref export``: fold an adapter into an ONNX model and verify the result with onnxruntime.

    peftref export --onnx model.onnx --adapter my-adapter/ -o merged.onnx [--base-weights model.safetensors]
                   [--no-verify] [--json]

The adapter is a PEFT directory (LoRA, FourierFT, MiSS/Bone/Bat) or a peftref one (any method). The output is written
atomically (with ``merged.onnx.data`` beside it when the base has external data) and never over the input.
"""

from __future__ import annotations

import argparse
import json

from ..demo import format_table
from .folding import PRECISIONS, fold


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="fold an adapter into an ONNX model, verified with onnxruntime",
        description="Fold an adapter into an ONNX model and verify the result with onnxruntime.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--onnx", required=True, metavar="BASE.onnx", help="the base model exported to ONNX")
    parser.add_argument("--adapter", required=True, metavar="DIR", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the folded model to write")
    parser.add_argument(
        "--base-weights", metavar="PATH",
        help="the base model's safetensors weights: finds weights the graph does not name by value, and confirms the others",
    )  # fmt: skip
    parser.add_argument(
        "--verify", action=argparse.BooleanOptionalAction, default=True,
        help="check with the onnx checker and compare onnxruntime's output with the base model plus the unmerged adapter (default: on)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="arithmetic of W + ΔW before its one rounding to the weight's dtype: float32 (default; float64 for float64 weights) "
        "or float64 (the exactly rounded reference merge, about 2× slower for low-rank adapters)",
    )  # fmt: skip
    parser.add_argument("--tolerance", type=float, metavar="REL", help="allowed relative output error (default: by dtype, 1e-4 for float32)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    report = fold(
        args.onnx, args.adapter, args.output, base_weights=args.base_weights, verify=args.verify,
        tolerance=args.tolerance, precision=args.precision, progress=args.progress,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    rows = [{**vars(layer), "shape": "×".join(map(str, layer.shape)), "initializers": ", ".join(layer.initializers)} for layer in report.layers]
    columns = [
        ("module", "module", "s"),
        ("method", "method", "s"),
        ("located_by", "found by", "s"),
        ("initializers", "initializer", "s"),
        ("layout", "layout", "s"),
        ("dtype", "dtype", "s"),
        ("shape", "d_out×d_in", "s"),
        ("seconds", "seconds", ".3f"),
    ]
    print(format_table(rows, columns))
    for saved in report.saved:
        print(f"saved module {saved['module']}.{saved['param']} -> {saved['initializer']} (found by {saved['located_by']})")
    shared = [layer.module for layer in report.layers if layer.shared]
    if shared:
        print(f"{len(shared)} adapted weight(s) were shared with other nodes and copied for the adapted module only: {', '.join(shared)}")
    data = f" + {report.external_data}" if report.external_data else ""
    print(f"wrote {report.output}{data}: {len(report.layers)} layers folded, {report.bytes_written / 2**20:.1f} MiB of tensors, {report.seconds:.2f} s")
    check = report.verification
    if check:
        print(
            f"verified on onnxruntime ({check['provider']}): max |folded − reference| = {check['max_abs_error']:.3g} "
            f"(relative {check['max_rel_error']:.3g}); the adapter changes the output by {check['adapter_effect']:.3g} (relative)"
            + ("" if check["conclusive"] else " — too little for the check to be conclusive")
        )
    return 0
