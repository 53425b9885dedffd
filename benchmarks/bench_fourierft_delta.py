"""FourierFT's dense ΔW for one LLaMA-sized layer: the reference against PEFT and against the physical limit.

    python benchmarks/bench_fourierft_delta.py [--repeats 7] [--size 4096] [--n 1000]

Times, in one run and interleaved (median of --repeats after one warm-up call each):
  - peftref ``refimpl.fourierft.delta_weight`` (float64; the sparse-column ifft + irfft path),
  - PEFT 0.21.2 ``FourierFTLayer.get_delta_weight`` (float32: a dense spectrum, then a complex ``torch.fft.ifft2``),
  - the same dense formula in NumPy float64, ``alpha * np.real(scipy.fft.ifft2(F))``, the plain reading of the spec,
  - the physical limit: producing size × size float64 values at all (``np.empty`` + ``fill``, and a copy of that many bytes).
Prints the ratios and writes benchmarks/results/fourierft_delta.json. Target: peftref ≤ 0.5 × PEFT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy.fft
import torch
from peft import FourierFTConfig, get_peft_model

from peftref.demo import format_table
from peftref.refimpl import fourierft

RESULTS = Path(__file__).resolve().parent / "results" / "fourierft_delta.json"
TARGET = 0.5


def peft_layer(size: int, n: int, alpha: float, seed: int, spectrum: np.ndarray):
    """A real PEFT FourierFT layer on nn.Linear(size, size), holding `spectrum` (as float32)."""
    model = torch.nn.Sequential(torch.nn.Linear(size, size, bias=False))
    config = FourierFTConfig(n_frequency=n, scaling=alpha, random_loc_seed=seed, target_modules=["0"])
    layer = get_peft_model(model, config).base_model.model[0]
    with torch.no_grad():
        layer.fourierft_spectrum["default"].copy_(torch.from_numpy(spectrum.astype(np.float32)))
    return layer


def median_seconds(candidates: dict, repeats: int) -> dict[str, float]:
    """Interleaved timing: one warm-up call each, then `repeats` rounds calling every candidate once."""
    times = {name: [] for name in candidates}
    for function in candidates.values():
        function()
    for _ in range(repeats):
        for name, function in candidates.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="d_out = d_in of the layer (default 4096)")
    parser.add_argument("--n", type=int, default=1000, help="number of spectral coefficients (default 1000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds; the median is reported (default 7)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"results JSON (default {RESULTS})")
    args = parser.parse_args(argv)

    size, n, alpha, seed = args.size, args.n, 150.0, 777
    cfg = fourierft.Config(n=n, alpha=alpha, seed=seed)
    W = np.zeros((size, size))
    params = fourierft.init(W, cfg, np.random.default_rng(0))
    params["spectrum"] = params["spectrum"].astype(np.float32).astype(np.float64)  # the values PEFT holds, exactly
    layer = peft_layer(size, n, alpha, seed, params["spectrum"])
    assert np.array_equal(layer.indices["default"].numpy(), params["indices"])

    dense_F = np.zeros((size, size))
    dense_F[params["indices"][0], params["indices"][1]] = params["spectrum"]
    source = np.ones((size, size))

    ours = fourierft.delta_weight(W, params, cfg)
    with torch.no_grad():
        theirs = layer.get_delta_weight("default").numpy()
    plain = alpha * np.real(scipy.fft.ifft2(dense_F))
    scale = float(np.abs(plain).max())
    agreement = {
        "peftref_vs_plain": float(np.abs(ours - plain).max()) / scale,
        "peft_vs_plain": float(np.abs(theirs - plain).max()) / scale,
    }

    def peft_delta():
        with torch.no_grad():
            return layer.get_delta_weight("default")

    candidates = {
        "peftref delta_weight (float64)": lambda: fourierft.delta_weight(W, params, cfg),
        "PEFT get_delta_weight (float32)": peft_delta,
        "plain alpha*Re(ifft2(F)) (NumPy, float64)": lambda: alpha * np.real(scipy.fft.ifft2(dense_F)),
        "limit: np.empty + fill (float64)": lambda: np.empty((size, size)).fill(1.0),
        "limit: copy of size² float64": lambda: source.copy(),
    }
    seconds = median_seconds(candidates, args.repeats)
    peft_seconds = seconds["PEFT get_delta_weight (float32)"]
    fill_seconds = seconds["limit: np.empty + fill (float64)"]
    rows = [
        {"impl": name, "median_s": s, "ratio_to_peft": s / peft_seconds, "ratio_to_fill": s / fill_seconds} for name, s in seconds.items()
    ]
    ratio = seconds["peftref delta_weight (float64)"] / peft_seconds
    result = {
        "name": "fourierft_delta",
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"shape": [size, size], "n": n, "alpha": alpha, "seed": seed, "repeats": args.repeats},
        "threads": {"torch": torch.get_num_threads(), "scipy_fft_workers": fourierft._WORKERS},
        "max_rel_error": agreement,
        "target_ratio_to_peft": TARGET,
        "ratio_to_peft": ratio,
        "meets_target": ratio <= TARGET,
        "rows": rows,
    }

    print(f"FourierFT ΔW, {size}×{size}, n = {n}, median of {args.repeats} (torch threads {torch.get_num_threads()})")
    print(
        format_table(
            rows,
            [
                ("impl", "implementation", "s"),
                ("median_s", "seconds", ".4f"),
                ("ratio_to_peft", "× PEFT", ".3f"),
                ("ratio_to_fill", "× fill", ".2f"),
            ],
        )
    )
    print(f"max |ΔW − plain| / max |ΔW|: peftref {agreement['peftref_vs_plain']:.1e}, PEFT {agreement['peft_vs_plain']:.1e}")
    print(f"peftref / PEFT = {ratio:.3f} (target ≤ {TARGET}): {'met' if ratio <= TARGET else 'MISSED'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
