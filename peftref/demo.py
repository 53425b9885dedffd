"""``peftref demo``: fold one adapter of every method into an ONNX model and prove it with onnxruntime, in seconds.

The embedded default model is built in code (nothing is downloaded, no torch): a 4-layer MLP of 64×64 linear layers with
fixed random weights and tanh between them, written as ONNX the way torch's dynamo exporter writes a ``Linear`` on a 3-D input (a ``MatMul`` on a
renamed, transposed initializer ``val_i``, the module known only from ``name_scopes`` metadata). For each method the demo

1. makes a fine-tuned-looking adapter on every layer (random trainable parameters) and saves it as a checkpoint
   (PEFT's format for LoRA, FourierFT, Bone and Bat; peftref's own for the others);
2. folds it into the ONNX model with :func:`peftref.export.fold` (which also verifies the result on onnxruntime);
3. runs the merged model on onnxruntime and compares it with the reference's *unmerged*, efficient-form forward in float64;
4. times the merged model against the base model.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from . import refimpl
from .adapter import Adapter, LayerAdapter

#: (method, config fields): small, sensible settings for 64×64 layers.
DEMO_CONFIGS = {
    "lora": {"r": 4, "alpha": 8.0},
    "fourierft": {"n": 128, "alpha": 150.0, "seed": 777},
    "sdctft": {"n": 128, "alpha": 1.0, "seed": 0},
    "dcft": {"d": 8, "k": 1, "scaling": 16.0},
    "bone": {"r": 4},
    "bat": {"r": 4},
    "svd_rescale": {"r": 8},
}
WIDTH, DEPTH, BATCH, SEQUENCE = 64, 4, 4, 16
LATENCY_RUNS = 200


def default_model(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The embedded default: DEPTH (W, b) pairs of shape (WIDTH, WIDTH), (WIDTH,)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH), rng.standard_normal(WIDTH) * 0.1) for _ in range(DEPTH)]


def trained_params(method: str, W: np.ndarray, cfg, rng: np.random.Generator) -> dict:
    """Init, then perturb the trainable parameters as a stand-in for training (ΔW ≠ 0, well-conditioned for Bat)."""
    module = refimpl.get(method)
    params = module.init(W, cfg, rng)
    for name in module.TRAINABLE:
        params[name] = params[name] + 0.05 * rng.standard_normal(params[name].shape)
    return params


def demo_adapter(method: str, layers, seed: int) -> Adapter:
    """One adapter of `method` on every layer ``layers.i`` of the default model."""
    cfg, rng = refimpl.make_config(method, DEMO_CONFIGS[method]), np.random.default_rng(seed + 2)
    adapted = {
        f"layers.{i}": LayerAdapter(f"layers.{i}", method, cfg, trained_params(method, W, cfg, rng), W.shape)
        for i, (W, _) in enumerate(layers)
    }
    return Adapter(adapted)


def mlp_forward(x: np.ndarray, layers, linear) -> np.ndarray:
    """h_{i+1} = tanh(linear(i, h_i, W_i, b_i)), no tanh after the last layer; float64."""
    h = x.astype(np.float64)
    for i, (W, b) in enumerate(layers):
        h = linear(i, h, W, b)
        h = np.tanh(h) if i < len(layers) - 1 else h
    return h


def reference_forward(x: np.ndarray, layers, adapter: Adapter) -> np.ndarray:
    """The adapted model with each layer's unmerged, efficient-form reference forward."""

    def adapted_linear(i, h, W, b):
        layer = adapter.layers[f"layers.{i}"]
        return refimpl.get(layer.method).forward(h, W, layer.params, layer.config, bias=b)

    return mlp_forward(x, layers, adapted_linear)


def base_forward(x: np.ndarray, layers) -> np.ndarray:
    """The base model: h Wᵀ + b per layer."""
    return mlp_forward(x, layers, lambda i, h, W, b: h @ W.T + b)


def median_latency(session, feeds: dict, runs: int = LATENCY_RUNS) -> float:
    """Median seconds of one onnxruntime run."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(seed: int = 0, workdir: str | Path | None = None) -> list[dict]:
    """One row per method: trainable parameters, ratio to LoRA, max error vs the reference, fold time, latencies."""
    import onnx
    import onnxruntime

    from .checkpoints import write_adapter
    from .export import fold
    from .export.models import mlp_model

    layers = default_model(seed)
    x = np.random.default_rng(seed + 1).standard_normal((BATCH, SEQUENCE, WIDTH)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        base = tmp / "base.onnx"
        onnx.save(mlp_model(layers, form="matmul", sequence=True), base)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # steadier latencies on a shared machine
        base_session = onnxruntime.InferenceSession(str(base), options, providers=["CPUExecutionProvider"])
        for method in DEMO_CONFIGS:
            adapter = demo_adapter(method, layers, seed)
            write_adapter(adapter, tmp / method)
            report = fold(base, tmp / method, tmp / f"{method}.onnx", inputs={"x": x}, progress=False)
            session = onnxruntime.InferenceSession(str(tmp / f"{method}.onnx"), options, providers=["CPUExecutionProvider"])
            (y,) = session.run(None, {"x": x})
            expected = reference_forward(x, layers, adapter)
            rows.append(
                {
                    "method": method,
                    "config": DEMO_CONFIGS[method],
                    "trainable": adapter.num_trainable(),
                    "max_abs_error": float(np.abs(y - expected).max()),
                    "adapter_effect": float(np.abs(expected - base_forward(x, layers)).max()),
                    "fold_seconds": report.seconds,
                    "base_latency_s": median_latency(base_session, {"x": x}),
                    "merged_latency_s": median_latency(session, {"x": x}),
                }
            )
    lora = next(row["trainable"] for row in rows if row["method"] == "lora")
    for row in rows:
        row["ratio_to_lora"] = row["trainable"] / lora
        row["latency_ratio"] = row["merged_latency_s"] / row["base_latency_s"]
    return rows


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; columns are (key, header, format spec)."""
    cells = [[header for _, header, _ in columns]] + [[format(row[key], spec) for key, _, spec in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="fold one adapter of every method into an embedded ONNX model and check it on onnxruntime",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the default model and adapters (default 0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    rows = run(args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"peftref demo: {DEPTH} linear layers of {WIDTH}×{WIDTH} in ONNX, input ({BATCH}, {SEQUENCE}, {WIDTH}), onnxruntime CPU")
    print(
        format_table(
            rows,
            [
                ("method", "method", "s"),
                ("trainable", "trainable", "d"),
                ("ratio_to_lora", "× LoRA", ".2f"),
                ("max_abs_error", "max error vs reference", ".1e"),
                ("adapter_effect", "adapter effect", ".1e"),
                ("fold_seconds", "fold s", ".3f"),
                ("latency_ratio", "merged/base latency", ".2f"),
            ],
        )
    )
    print("max error: onnxruntime (float32) on the merged model vs the reference's unmerged forward (float64);")
    print("adapter effect: how far the adapter moves the output, so the error is small relative to a real change.")
    return 0
