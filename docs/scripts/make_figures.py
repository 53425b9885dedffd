"""Draw the method pages' figures from the reference: ``python docs/scripts/make_figures.py [--out DIR]``.

Every array drawn comes from ``peftref.refimpl`` (ΔW, locations, bands), so the pictures cannot drift from the code.
Writes one PNG per method into docs/figures/ (or --out), small (dpi 100) and deterministic (fixed seeds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402

from peftref.demo import trained_params  # noqa: E402
from peftref.refimpl import bat, bone, dcft, fourierft, lora, sdctft, svd_rescale  # noqa: E402

FIGURES = Path(__file__).resolve().parents[1] / "figures"
DPI = 100
CMAP = "RdBu_r"


def heatmap(ax, A: np.ndarray, title: str) -> None:
    """A signed matrix on a symmetric colour scale, rows down, columns across."""
    limit = float(np.abs(A).max()) or 1.0
    image = ax.imshow(A, cmap=CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=7)
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def grid(ax, shape: tuple[int, int], rows_every: int | None, cols_every: int | None, color: str = "k") -> None:
    """Block boundaries every `rows_every` rows and `cols_every` columns."""
    d_out, d_in = shape
    for r in range(rows_every or d_out, d_out, rows_every or d_out):
        ax.axhline(r - 0.5, color=color, lw=0.8)
    for c in range(cols_every or d_in, d_in, cols_every or d_in):
        ax.axvline(c - 0.5, color=color, lw=0.8)


def draw_lora(path: Path) -> None:
    m, cfg = lora, lora.Config(r=2, alpha=2.0)
    W = np.zeros((32, 48))
    params = trained_params(m.METHOD, W, cfg, np.random.default_rng(0))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 0.6, 3]})
    heatmap(axes[0], params["A"], "A  (r × d_in)")
    axes[0].set_aspect(4)
    heatmap(axes[1], params["B"], "B  (d_out × r)")
    heatmap(axes[2], m.delta_weight(W, params, cfg), "ΔW = s·BA  (rank 2)")
    save(fig, path)


def draw_fourierft(path: Path) -> None:
    m, cfg = fourierft, fourierft.Config(n=24, alpha=150.0, seed=777)
    W = np.zeros((32, 48))
    params = m.init(W, cfg, rng=0)
    u, v = params["indices"]
    F = np.zeros(W.shape)
    F[u, v] = params["spectrum"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    heatmap(axes[0], F, "F: n = 24 coefficients at PEFT's locations (seed 777)")
    axes[0].set_xlabel("v (input frequency)", fontsize=8)
    axes[0].set_ylabel("u (output frequency)", fontsize=8)
    heatmap(axes[1], m.delta_weight(W, params, cfg), "ΔW = α·Re(ifft2(F))")
    save(fig, path)


def smooth_weight(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A weight whose DCT energy falls with frequency, like a trained layer's: idctn of noise · exp(−ρ/8)."""
    M, N = shape
    rho = np.hypot(*np.meshgrid(np.arange(M), np.arange(N), indexing="ij"))
    spectrum = np.random.default_rng(seed).standard_normal(shape) * np.exp(-rho / 8)
    return scipy.fft.idctn(spectrum, type=2, norm="ortho")


def draw_sdctft(path: Path) -> None:
    m, cfg = sdctft, sdctft.Config(n=60, alpha=1.0, seed=0)
    W = smooth_weight((48, 64), seed=1)
    M, N = W.shape
    energy = np.abs(scipy.fft.dctn(W, type=2, norm="ortho"))
    params = trained_params(m.METHOD, W, cfg, np.random.default_rng(2))
    u, v = params["indices"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    image = axes[0].imshow(np.log10(energy + 1e-6), cmap="viridis", interpolation="nearest")
    plt.colorbar(image, ax=axes[0], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    rho_max = np.hypot(M - 1, N - 1)
    angles = np.linspace(0, np.pi / 2, 200)
    for b in range(1, cfg.bands):
        radius = b * rho_max / cfg.bands
        axes[0].plot(radius * np.cos(angles), radius * np.sin(angles), color="w", lw=1.2, ls="--")
    axes[0].scatter(v, u, s=14, facecolors="none", edgecolors="r", lw=1.0)
    axes[0].set_xlim(-0.5, N - 0.5)
    axes[0].set_ylim(M - 0.5, -0.5)
    axes[0].set_title("log10 E = |dctn(W)|, band boundaries, the n = 60 chosen", fontsize=10)
    axes[0].set_xlabel("v", fontsize=8)
    axes[0].set_ylabel("u", fontsize=8)
    axes[0].tick_params(labelsize=7)
    heatmap(axes[1], m.delta_weight(W, params, cfg), "ΔW = α·idctn(S)")
    save(fig, path)


def draw_dcft(path: Path) -> None:
    m = dcft
    W = np.zeros((32, 48))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, cfg, title in (
        (axes[0], m.Config(d=8), "stride = d = 8: ΔW = kron(BA, Cᵀ)"),
        (axes[1], m.Config(d=8, stride=4), "stride 4: overlapping copies of Cᵀ add up"),
    ):
        params = trained_params(m.METHOD, W, cfg, np.random.default_rng(3))
        heatmap(ax, m.delta_weight(W, params, cfg), title)
        grid(ax, W.shape, cfg.stride, cfg.stride, color="0.4")
    save(fig, path)


def draw_bone(path: Path) -> None:
    m = bone
    W = np.zeros((24, 40))
    cfg, cfg_mini = m.Config(r=6), m.Config(r=6, mini_r=8)
    params = trained_params(m.METHOD, W, cfg, np.random.default_rng(4))
    params_mini = trained_params(m.METHOD, W, cfg_mini, np.random.default_rng(4))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), gridspec_kw={"width_ratios": [1.3, 3, 3]})
    heatmap(axes[0], params["D"].T, "Dᵀ  (d_out × r)")
    heatmap(axes[1], m.delta_weight(W, params, cfg), "ΔW[o, i] = D[i mod r, o], r = 6")
    grid(axes[1], W.shape, None, cfg.r)
    heatmap(axes[2], m.delta_weight(W, params_mini, cfg_mini), "mini: D_m (6 × 8) tiled down")
    grid(axes[2], W.shape, cfg_mini.mini_r, cfg_mini.r)
    save(fig, path)


def draw_bat(path: Path) -> None:
    m, cfg = bat, bat.Config(r=8)
    W = np.random.default_rng(5).standard_normal((24, 32)) / np.sqrt(32)
    params = trained_params(m.METHOD, W, cfg, np.random.default_rng(6))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), gridspec_kw={"width_ratios": [3, 1, 3]})
    heatmap(axes[0], W, "W in 8 × 8 blocks W_ij")
    grid(axes[0], W.shape, cfg.r, cfg.r)
    heatmap(axes[1], params["B"].reshape(-1, cfg.r), "B_0, B_1, B_2")
    grid(axes[1], (W.shape[0], cfg.r), cfg.r, None)
    heatmap(axes[2], m.delta_weight(W, params, cfg), "ΔW_ij = (W_ij + I) B_i")
    grid(axes[2], W.shape, cfg.r, cfg.r)
    save(fig, path)


def draw_svd_rescale(path: Path) -> None:
    m, cfg = svd_rescale, svd_rescale.Config(r=8)
    W = np.random.default_rng(7).standard_normal((32, 48)) / np.sqrt(48)
    params = m.init(W, cfg)
    rng = np.random.default_rng(8)
    params["s"] = params["sigma0"] * (1 + 0.3 * rng.standard_normal(cfg.r))
    params["b"] = 1 + 0.2 * rng.standard_normal(W.shape[0])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), gridspec_kw={"width_ratios": [1.6, 1.6, 3]})
    j = np.arange(cfg.r)
    axes[0].bar(j - 0.2, params["sigma0"], width=0.4, label="σ⁰ (frozen)")
    axes[0].bar(j + 0.2, params["s"], width=0.4, label="s (trained)")
    axes[0].set_title("singular values", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].plot(params["b"], ".-", lw=0.8)
    axes[1].axhline(1.0, color="0.5", lw=0.8, ls="--")
    axes[1].set_title("output scale b (init 1)", fontsize=10)
    for ax in axes[:2]:
        ax.tick_params(labelsize=7)
    heatmap(axes[2], m.delta_weight(W, params, cfg), "ΔW = (diag(b) U diag(s) − U diag(σ⁰)) Vᵀ")
    save(fig, path)


#: figure file name -> drawing function; the method pages embed ../figures/<name>.
DRAWINGS = {
    "lora.png": draw_lora,
    "fourierft.png": draw_fourierft,
    "sdctft.png": draw_sdctft,
    "dcft.png": draw_dcft,
    "bone.png": draw_bone,
    "bat.png": draw_bat,
    "svd_rescale.png": draw_svd_rescale,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help=f"output directory (default {FIGURES})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in DRAWINGS.items():
        draw(args.out / name)
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
