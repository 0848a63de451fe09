"""Matplotlib charts: class probabilities, and each layer's weights before and after training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mindscope.render.figures import encode, new_figure

STAGE_TITLES = {"initial": "before training", "trained": "after training"}
STAGE_COLOURS = {"initial": "tab:gray", "trained": "tab:blue"}


def probability_chart(probabilities: np.ndarray, class_names: tuple[str, ...]) -> bytes:
    """probabilities: float (K,) -> PNG 640x420, one horizontal bar per class, the top one highlighted."""
    top = int(np.argmax(probabilities))
    figure = new_figure(6.4, 4.2)
    axes = figure.subplots()
    order = np.arange(len(class_names))[::-1]
    colors = ["tab:orange" if i == top else "tab:blue" for i in order]
    axes.barh([class_names[i] for i in order], probabilities[order], color=colors)
    axes.set_xlim(0, 1)
    axes.set_xlabel("probability")
    for y, i in enumerate(order):
        axes.text(min(probabilities[i] + 0.01, 0.9), y, f"{probabilities[i]:.3f}", va="center", fontsize=8)
    axes.set_title(f"Predicted: {class_names[top]} (p = {probabilities[top]:.3f})")
    figure.tight_layout()
    return encode(figure)


@dataclass(frozen=True)
class WeightPanel:
    """One parameter tensor of one layer: its values at each stage (flattened)."""

    layer: str
    parameter: str
    shape: tuple[int, ...]
    stages: Mapping[str, np.ndarray]


def _short(name: str, limit: int = 22) -> str:
    """A long layer name (deep imported models have them) cut in the middle, so titles stay apart."""
    return name if len(name) <= limit else f"{name[: limit // 2 - 1]}~{name[-(limit // 2) :]}"


def histogram_figure(panels: Sequence[WeightPanel], bins: int, note: str | None = None) -> bytes:
    """One row per layer; per weight tensor of the layer (kernel and bias; BatchNorm's four) one
    panel per stage, left to right, each on its own x-axis and as a density, so a layer with 1,280
    weights reads as well as one with 73,728 and the narrow initial weights as well as the trained
    ones. PNG 1400 px wide, 190 px per layer."""
    layers: dict[str, list[WeightPanel]] = {}
    for panel in panels:
        layers.setdefault(panel.layer, []).append(panel)
    stages = list(dict.fromkeys(stage for p in panels for stage in p.stages))
    columns = max(len(tensors) for tensors in layers.values()) * len(stages)
    figure = new_figure(14.0, 1.2 + 1.9 * len(layers))
    axes = figure.subplots(len(layers), columns, squeeze=False)
    for row, (layer, tensors) in enumerate(layers.items()):
        for col in range(columns):
            ax = axes[row][col]
            position, stage_index = divmod(col, len(stages))
            stage = stages[stage_index]
            if position >= len(tensors) or stage not in tensors[position].stages:
                ax.set_axis_off()
                continue
            panel = tensors[position]
            values = np.asarray(panel.stages[stage], np.float64).ravel()
            shape = "x".join(map(str, panel.shape))
            title = f"{_short(layer)} {panel.parameter} ({shape}), {STAGE_TITLES.get(stage, stage)}"
            ax.set_title(title, fontsize=8 if columns <= 4 else 6)
            low, high = float(values.min()), float(values.max())
            if high <= low:
                ax.axvline(low, color=STAGE_COLOURS.get(stage, "tab:blue"))
                ax.text(0.5, 0.5, f"all {values.size} = {low:g}", transform=ax.transAxes, ha="center", fontsize=8)
                ax.set_yticks([])
            else:
                ax.hist(values, bins=bins, density=True, color=STAGE_COLOURS.get(stage, "tab:blue"), alpha=0.85)
                ax.text(
                    0.98,
                    0.95,
                    f"n={values.size}\nstd={values.std():.3g}",
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize=7,
                )
            ax.tick_params(labelsize=7)
            ax.set_xlabel(f"{panel.parameter} value", fontsize=7)
            if col == 0:
                ax.set_ylabel("density", fontsize=8)
    title = "Weights of each layer before and after training (each panel on its own scale)"
    figure.suptitle(title if note is None else f"{title}\n{note}", fontsize=12)
    figure.tight_layout(rect=(0, 0, 1, 0.97 if note is None else 0.95))
    return encode(figure)
