"""A picture of one adapted layer: its ΔW, and for the spectral methods the spectrum with the selected locations.

FourierFT: log10 |fft2(ΔW)| — the n chosen (u, v) light up, and so do their mirrors (−u, −v), because ΔW = α Re(ifft2(F))
is real. sDCTFT: log10 |dctn(ΔW, ortho)| = log10 |α S|, exactly the n chosen coefficients. Uses matplotlib's Agg canvas
directly (no pyplot, no global backend change) and writes the PNG atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.fft

from ..adapter import LayerAdapter
from ._files import atomic_file

#: method -> (title, transform of ΔW whose magnitude is the spectrum the method selects in)
SPECTRA = {
    "fourierft": ("log10 |fft2(ΔW)|", np.fft.fft2),
    "sdctft": ("log10 |dctn(ΔW)|", lambda dW: scipy.fft.dctn(dW, type=2, norm="ortho")),
}


def plot_layer(layer: LayerAdapter, out: Path, W: np.ndarray | None = None) -> None:
    """Draw `layer`'s ΔW (and spectrum) to the PNG `out`; W (d_out, d_in) is needed by methods whose ΔW depends on it."""
    from matplotlib.figure import Figure

    dW = layer.delta_weight(W)  # (d_out, d_in)
    spectral = layer.method in SPECTRA
    figure = Figure(figsize=(11 if spectral else 6, 5), layout="constrained")
    axes = figure.subplots(1, 2 if spectral else 1, squeeze=False)[0]
    limit = float(np.abs(dW).max()) or 1.0
    image = axes[0].imshow(dW, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest", aspect="auto")
    axes[0].set(title=f"ΔW of {layer.module} ({layer.method})", xlabel="input i", ylabel="output o")
    figure.colorbar(image, ax=axes[0])
    if spectral:
        title, transform = SPECTRA[layer.method]
        magnitude = np.abs(transform(dW))  # (d_out, d_in)
        floor = magnitude.max() * 1e-12 or 1e-300
        image = axes[1].imshow(np.log10(magnitude + floor), cmap="viridis", interpolation="nearest", aspect="auto")
        u, v = np.asarray(layer.params["indices"])
        axes[1].scatter(v, u, s=12, facecolors="none", edgecolors="red", linewidths=0.6, label=f"{u.size} selected (u, v)")
        axes[1].set(title=title, xlabel="input frequency v", ylabel="output frequency u")
        axes[1].legend(loc="upper right", fontsize="small")
        figure.colorbar(image, ax=axes[1])
    with atomic_file(out) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
