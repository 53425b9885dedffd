"""``peftref demo``: every method on an embedded default model, end to end, in a few seconds.

The default model is built in code (nothing is downloaded): a 4-layer MLP with 64-wide hidden layers and fixed random weights.
For each method the demo adapts every hidden layer with a fine-tuned-looking adapter (random trainable parameters), merges it
with the reference, and checks that the merged model computes what the adapted (unmerged, efficient-form) model computes.
"""

from __future__ import annotations

import json
import time

import numpy as np

from . import refimpl

#: (method, config fields): small, sensible settings for 64×64 layers.
DEMO_CONFIGS = {
    "lora": {"r": 4, "alpha": 8.0},
    "fourierft": {"n": 128, "alpha": 150.0, "seed": 777},
    "sdctft": {"n": 128, "alpha": 1.0, "seed": 0},
    "dcft": {"d": 8, "k": 1, "scaling": 1.0},
    "bone": {"r": 4},
    "bat": {"r": 4},
    "svd_rescale": {"r": 8},
}
WIDTH, DEPTH, TOKENS = 64, 4, 32


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


def run_reference(seed: int = 0) -> list[dict]:
    """One row per method: trainable parameters, ratio to LoRA, max |merged − adapted| output error."""
    layers = default_model(seed)
    x = np.random.default_rng(seed + 1).standard_normal((TOKENS, WIDTH))
    rows = []
    for method, fields in DEMO_CONFIGS.items():
        module, rng = refimpl.get(method), np.random.default_rng(seed + 2)
        cfg = refimpl.make_config(method, fields)
        start = time.perf_counter()
        h_adapted, h_merged, trainable = x, x, 0
        for W, b in layers:
            params = trained_params(method, W, cfg, rng)
            h_adapted = np.tanh(module.forward(h_adapted, W, params, cfg, bias=b))
            h_merged = np.tanh(h_merged @ module.merge(W, params, cfg).T + b)
            trainable += module.num_trainable(W.shape, cfg)
        rows.append(
            {
                "method": method,
                "config": fields,
                "trainable": trainable,
                "max_abs_error": float(np.abs(h_adapted - h_merged).max()),
                "seconds": time.perf_counter() - start,
            }
        )
    lora = next(row["trainable"] for row in rows if row["method"] == "lora")
    for row in rows:
        row["ratio_to_lora"] = row["trainable"] / lora
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
        help="run every method end to end on an embedded default model",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the default model and adapters (default 0)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.set_defaults(run=_run)


def _run(args) -> int:
    rows = run_reference(args.seed)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"peftref demo: {DEPTH} layers of {WIDTH}×{WIDTH}, {TOKENS} tokens, reference (float64)")
    print(
        format_table(
            rows,
            [
                ("method", "method", "s"),
                ("trainable", "trainable", "d"),
                ("ratio_to_lora", "× LoRA", ".2f"),
                ("max_abs_error", "max |merged − adapted|", ".1e"),
                ("seconds", "seconds", ".3f"),
            ],
        )
    )
    return 0
