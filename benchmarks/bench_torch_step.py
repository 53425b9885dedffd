"""One training step (forward + backward) of one adapted layer: peftref.torch against Hugging Face PEFT, on the CPU.

Layers of d × d = 1024² and 4096², 2048 tokens, float32. Pairs with a PEFT twin: LoRA r=8, FourierFT n=1000, Bone
(PEFT's MiSS default) r=64, Bat (MiSS ``init_weights="bat"``) r=64. The methods PEFT lacks (sDCTFT n=1000, DCFT d=8 k=1,
SVD re-scaling r=8) are compared with PEFT's LoRA r=1, the LoRA of a similar trainable-parameter count. "base" is the
frozen nn.Linear alone: step − base is what the adapter adds.

The input requires grad (a layer inside a network: the step includes ∂L/∂x); FourierFT is also timed with a leaf input
(the first adapted layer: no ∂L/∂x), where the base layer costs one matrix product instead of two.

Rows ("step"): one per peftref case, beside its baseline and the base layer. *_ms: the step time; *_median_ms: its
median, a measure of the noise; *_peak_mb: peak memory; *_adapter_ms: step − base step; speedup_ratio = baseline step /
peftref step and adapter_ratio = baseline adapter_ms / peftref adapter_ms (> 1: peftref is faster; adapter_ratio only
where both adapter costs exceed 5 % of the base step, below that they are timing noise).

Time: all cases of one size share one fresh subprocess and are stepped in rounds, each round visiting every case in turn
(so that a change in the machine's load — it is shared — hits all cases alike); a case's time is its minimum over the
rounds after a warm-up round (25 rounds at d = 1024, 5 at 4096). Memory: each case in its own fresh subprocess, the peak
of the resident set during one step after a warm-up step (Linux VmHWM, reset through /proc/self/clear_refs just before
it) minus the resident set just before it: activations saved for backward, gradients and temporaries. glibc's mmap
threshold is fixed at 64 KiB there (MALLOC_MMAP_THRESHOLD_; not while timing, it slows allocation), so every tensor is its
own mapping and freed memory leaves the resident set: the figure follows live memory, not allocator caching. The layer,
its input and the upstream gradient are allocated before and not counted.

Rows ("dct") time the orthonormal DCT-II of 2048 × d activations two ways: peftref.torch.dct (one real FFT, Makhoul's
reordering) and a product with the cached DCT matrix — at the 1000 frequencies sDCTFT reads (``dct_at`` against a product
with the 1000 cached columns) and in full; matrix_to_fft_ratio > 1: the FFT form is faster. The justification for the
FFT form in sDCTFT.

    python benchmarks/bench_torch_step.py                  # both sizes, writes benchmarks/results/torch_step.json
    python benchmarks/bench_torch_step.py --sizes 1024     # the quick one
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOKENS = 2048
RESULTS = Path(__file__).resolve().parent / "results" / "torch_step.json"

#: (label, implementation, method, config); PEFT configs are translated in build_peft.
CASES = [
    ("base", "torch", "base", {}),
    ("lora r=8", "peftref", "lora", {"r": 8, "alpha": 8.0}),
    ("lora r=8", "peft", "lora", {"r": 8, "alpha": 8.0}),
    ("fourierft n=1000", "peftref", "fourierft", {"n": 1000, "alpha": 150.0}),
    ("fourierft n=1000", "peft", "fourierft", {"n": 1000, "alpha": 150.0}),
    ("bone r=64", "peftref", "bone", {"r": 64}),
    ("bone r=64", "peft", "bone", {"r": 64}),
    ("bat r=64", "peftref", "bat", {"r": 64}),
    ("bat r=64", "peft", "bat", {"r": 64}),
    ("lora r=1", "peft", "lora", {"r": 1, "alpha": 1.0}),
    ("sdctft n=1000", "peftref", "sdctft", {"n": 1000, "alpha": 1.0, "init": "normal"}),
    ("dcft d=8 k=1", "peftref", "dcft", {"d": 8, "k": 1}),
    ("svd_rescale r=8", "peftref", "svd_rescale", {"r": 8}),
]
LEAF_CASES = [case for case in CASES if case[2] in ("base", "fourierft")]  # also timed without ∂L/∂x
#: rows compared with another row: label -> (label, implementation) of the row it is compared with.
BASELINE = {
    "lora r=8": ("lora r=8", "peft"),
    "fourierft n=1000": ("fourierft n=1000", "peft"),
    "bone r=64": ("bone r=64", "peft"),
    "bat r=64": ("bat r=64", "peft"),
    "sdctft n=1000": ("lora r=1", "peft"),
    "dcft d=8 k=1": ("lora r=1", "peft"),
    "svd_rescale r=8": ("lora r=1", "peft"),
}


# --- one case, in a subprocess ---------------------------------------------------------------------------------------


def build_peftref(method: str, config: dict, d: int):
    import numpy as np
    import torch

    import peftref.torch as pt

    base = torch.nn.Linear(d, d)
    if method == "svd_rescale":  # a full SVD of a 4096² matrix takes minutes here; the step time does not depend on values
        rng = np.random.default_rng(0)
        r = config["r"]
        U, V = (np.linalg.qr(rng.standard_normal((d, r)))[0] for _ in range(2))
        sigma0 = np.sort(rng.uniform(0.5, 2.0, r))[::-1]
        params = {"s": sigma0.copy(), "b": np.ones(d), "U": U, "V": V, "sigma0": sigma0}
        return pt.wrap(base, method, config, params)
    return pt.wrap(base, method, config, rng=0)


def build_peft(method: str, config: dict, d: int):
    import torch
    from peft import FourierFTConfig, LoraConfig, MissConfig, get_peft_model

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(d, d)

    peft_config = {
        "lora": lambda: LoraConfig(r=config.get("r"), lora_alpha=config.get("alpha"), target_modules=["layer"]),
        "fourierft": lambda: FourierFTConfig(n_frequency=config.get("n"), scaling=config.get("alpha"), target_modules=["layer"]),
        "bone": lambda: MissConfig(r=config.get("r"), target_modules=["layer"]),
        "bat": lambda: MissConfig(r=config.get("r"), init_weights="bat", target_modules=["layer"]),
    }[method]()
    return get_peft_model(One(), peft_config).base_model.model.layer


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))


def build(case: dict, d: int):
    """(layer, its trainable parameters) for one case."""
    import torch

    torch.manual_seed(0)
    if case["impl"] == "torch":
        layer = torch.nn.Linear(d, d).requires_grad_(False)
    elif case["impl"] == "peftref":
        layer = build_peftref(case["method"], case["config"], d)
    else:
        layer = build_peft(case["method"], case["config"], d)
    return layer, [p for p in layer.parameters() if p.requires_grad]


def make_step(layer, trainable, x, gy):
    def step():
        for p in trainable:
            p.grad = None
        x.grad = None
        y = layer(x)
        if y.requires_grad:  # the frozen base with a leaf input has no backward
            y.backward(gy)

    return step


def inputs(d: int, x_grad: bool):
    import torch

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(TOKENS, d, generator=generator).requires_grad_(x_grad)
    return x, torch.randn(TOKENS, d, generator=generator)


def measure_memory(spec: dict) -> dict:
    """Peak resident-set increase (MB) of one step of one case after a warm-up step; and the trainable count. Run with
    MALLOC_MMAP_THRESHOLD_ set (see _subprocess): every tensor is then its own mapping, returned to the OS when freed."""
    layer, trainable = build(spec, spec["size"])
    step = make_step(layer, trainable, *inputs(spec["size"], spec["x_grad"]))
    step()  # first-call allocations (thread pools, MKL buffers) are not the step's
    rss_before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset VmHWM to the current resident set
    step()
    return {"peak_step_mb": (_status_kib("VmHWM") - rss_before) / 1024, "trainable": sum(p.numel() for p in trainable)}


def measure_times(spec: dict) -> list[tuple[float, float]]:
    """Step times (ms) of every case of one size and input mode, in rounds that visit the cases in turn (so that a change
    in the machine's load hits every case alike): (minimum, median) over the rounds after a warm-up round."""
    cases = spec["cases"]
    x, gy = inputs(spec["size"], spec["x_grad"])
    steps = [make_step(*build(case, spec["size"]), x, gy) for case in cases]
    times = [[] for _ in cases]
    for round_ in range(spec["rounds"] + 1):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            if round_:
                times[i].append(1e3 * (time.perf_counter() - start))
    return [(min(t), statistics.median(t)) for t in times]


# --- the DCT choice ------------------------------------------------------------------------------------------------------


def dct_rows(sizes: list[int], repeats: int) -> list[dict]:
    """Time the orthonormal DCT-II of (TOKENS, d) float32 activations, FFT form against a product with the cached DCT
    matrix: at the n = 1000 frequencies sDCTFT reads (its analysis step), and in full."""
    import torch

    from peftref.torch.dct import dct, dct_at

    def best_ms(fn) -> float:
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * min(times[1:])

    rows = []
    for d in sizes:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(TOKENS, d, generator=generator)
        frequencies = torch.randint(0, d, (1000,), generator=generator)
        matrix = dct(torch.eye(d))  # (d, d): row i is the DCT of e_i, so x @ matrix = dct(x)
        columns = matrix[:, frequencies].contiguous()  # (d, 1000), cached as a layer would
        pairs = [
            ("n = 1000", lambda: dct_at(x, frequencies), lambda: x @ columns),
            ("all d", lambda: dct(x), lambda: x @ matrix),
        ]
        for label, fft_form, matrix_form in pairs:
            torch.testing.assert_close(fft_form(), matrix_form(), rtol=1e-4, atol=1e-4)
            fft_ms, matrix_ms = best_ms(fft_form), best_ms(matrix_form)
            rows.append(
                {"table": "dct", "activations": f"{TOKENS}×{d}", "frequencies": label, "fft_ms": fft_ms,
                 "matrix_ms": matrix_ms, "matrix_to_fft_ratio": matrix_ms / fft_ms}
            )
    return rows


# --- the driver ------------------------------------------------------------------------------------------------------------


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return f"{platform.platform()}, {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def _subprocess(task: str, spec: dict):
    env = dict(os.environ)
    if task == "memory":  # fixed: glibc then serves every block over 64 KiB by mmap (slow, so not while timing)
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    command = [sys.executable, __file__, "--" + task, json.dumps(spec)]
    out = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        raise RuntimeError(f"{task} {spec} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_all(sizes: list[int], rounds: dict[int, int]) -> list[dict]:
    """One measurement per (size, input, case): min and median step time, peak memory, trainable count."""
    from tqdm import tqdm

    groups = [(d, x_grad, cases) for d in sizes for x_grad, cases in ((True, CASES), (False, LEAF_CASES))]
    out = []
    with tqdm(total=sum(len(cases) + 1 for _, _, cases in groups), desc="subprocesses", unit="run") as progress:
        for d, x_grad, cases in groups:
            specs = [{"label": label, "impl": impl, "method": method, "config": config} for label, impl, method, config in cases]
            times = _subprocess("times", {"cases": specs, "size": d, "x_grad": x_grad, "rounds": rounds[d]})
            progress.update()
            for spec, (step_ms, median_ms) in zip(specs, times):
                memory = _subprocess("memory", {**spec, "size": d, "x_grad": x_grad})
                progress.update()
                out.append({"size": d, "x_grad": x_grad, "case": spec["label"], "impl": spec["impl"], "step_ms": step_ms,
                            "median_ms": median_ms, **memory})
    return out


def step_rows(measurements: list[dict]) -> list[dict]:
    """One row per peftref case, beside its baseline and the frozen base layer. adapter_ms = step − base step;
    speedup_ratio = baseline step / peftref step, adapter_ratio = baseline adapter_ms / peftref adapter_ms (> 1: faster),
    given only where both adapter costs exceed 5 % of the base step (below that they are within the timing noise)."""
    index = {(m["size"], m["x_grad"], m["case"], m["impl"]): m for m in measurements}
    rows = []
    for m in measurements:
        if m["impl"] != "peftref":
            continue
        base = index[(m["size"], m["x_grad"], "base", "torch")]
        other = index[(m["size"], m["x_grad"], *BASELINE[m["case"]])]
        rows.append(
            {
                "table": "step",
                "layer": f"{m['size']}×{m['size']}",
                "input": "∂L/∂x" if m["x_grad"] else "leaf",
                "case": m["case"],
                "trainable": m["trainable"],
                "base_ms": base["step_ms"],
                "peftref_ms": m["step_ms"],
                "peftref_median_ms": m["median_ms"],
                "peftref_peak_mb": m["peak_step_mb"],
                "baseline": f"{other['impl']} {other['case']}",
                "baseline_trainable": other["trainable"],
                "baseline_ms": other["step_ms"],
                "baseline_median_ms": other["median_ms"],
                "baseline_peak_mb": other["peak_step_mb"],
                "peftref_adapter_ms": m["step_ms"] - base["step_ms"],
                "baseline_adapter_ms": other["step_ms"] - base["step_ms"],
                "speedup_ratio": other["step_ms"] / m["step_ms"],
            }
        )
        ours, theirs, noise = rows[-1]["peftref_adapter_ms"], rows[-1]["baseline_adapter_ms"], 0.05 * base["step_ms"]
        if ours > noise and theirs > noise:
            rows[-1]["adapter_ratio"] = theirs / ours
    return rows


def print_tables(rows: list[dict]) -> None:
    from peftref.demo import format_table

    steps = [r for r in rows if r["table"] == "step"]
    steps = [{**r, "adapter_ratio_text": f"{r['adapter_ratio']:.2f}" if "adapter_ratio" in r else "noise"} for r in steps]
    columns = [("layer", "layer", "s"), ("input", "input", "s"), ("case", "case", "s"), ("trainable", "trainable", "d")]
    columns += [("base_ms", "base ms", ".1f"), ("peftref_ms", "peftref ms", ".1f"), ("peftref_median_ms", "median", ".1f")]
    columns += [("baseline", "baseline", "s"), ("baseline_ms", "baseline ms", ".1f"), ("baseline_median_ms", "median", ".1f")]
    columns += [("speedup_ratio", "speedup", ".2f"), ("peftref_adapter_ms", "adapter ms", ".1f")]
    columns += [("baseline_adapter_ms", "baseline adapter ms", ".1f"), ("adapter_ratio_text", "adapter ratio", "s")]
    columns += [("peftref_peak_mb", "peak MB", ".1f"), ("baseline_peak_mb", "baseline peak MB", ".1f")]
    print(format_table(steps, columns))
    dct = [r for r in rows if r["table"] == "dct"]
    print()
    columns = [("activations", "activations", "s"), ("frequencies", "DCT-II at", "s"), ("fft_ms", "FFT (Makhoul) ms", ".2f")]
    columns += [("matrix_ms", "cached matrix ms", ".2f"), ("matrix_to_fft_ratio", "matrix / FFT", ".2f")]
    print(format_table(dct, columns))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096], help="layer sizes d (default 1024 4096)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds per size (default 25 for d ≤ 1024, else 5)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    parser.add_argument("--times", help=argparse.SUPPRESS)  # internal: time a group of cases, print JSON
    parser.add_argument("--memory", help=argparse.SUPPRESS)  # internal: measure one case's memory, print JSON
    args = parser.parse_args(argv)
    if args.times or args.memory:
        print(json.dumps(measure_times(json.loads(args.times)) if args.times else measure_memory(json.loads(args.memory))))
        return 0
    rounds = {d: args.rounds or (25 if d <= 1024 else 5) for d in args.sizes}
    rows = step_rows(measure_all(args.sizes, rounds)) + dct_rows(args.sizes, repeats=20)
    print_tables(rows)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result = {"name": "torch_step", "machine": machine(), "date": date, "tokens": TOKENS, "rounds": rounds, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    temporary.replace(args.output)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
