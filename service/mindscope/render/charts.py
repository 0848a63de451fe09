"""Matplotlib figures: class probabilities and the seed's before/after weight histograms."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()


def probability_chart(probabilities: np.ndarray, class_names: tuple[str, ...]) -> bytes:
    """probabilities: float (K,) -> PNG 640x400, one horizontal bar per class, the top one highlighted."""
    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    order = np.arange(len(class_names))[::-1]
    colors = ["tab:orange" if i == int(np.argmax(probabilities)) else "tab:blue" for i in order]
    axes.barh([class_names[i] for i in order], probabilities[order], color=colors)
    axes.set_xlim(0, 1)
    axes.set_xlabel("probability")
    for y, i in enumerate(order):
        axes.text(min(probabilities[i] + 0.01, 0.9), y, f"{probabilities[i]:.3f}", va="center", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def histogram_figure(panels: Sequence[Sequence[tuple[str, np.ndarray, Mapping[str, np.ndarray]]]]) -> bytes:
    """The seed's figure: one row per panel of (layer, edges, {stage: counts}), before | after.

    PNG 1000 x (300 * rows) pixels.
    """
    rows = len(panels)
    figure, axes = plt.subplots(rows, 2, figsize=(10.0, 3.0 * rows), squeeze=False)
    for row, layers in enumerate(panels):
        for col, stage in enumerate(("initial", "trained")):
            ax = axes[row][col]
            for layer, edges, counts in layers:
                if stage in counts:
                    ax.stairs(counts[stage], edges, label=layer, fill=False, linewidth=1.2)
            ax.set_title(f"{'before' if stage == 'initial' else 'after'} training")
            ax.legend(fontsize=8)
            ax.set_xlabel("kernel weight")
    figure.tight_layout()
    return _png(figure)
