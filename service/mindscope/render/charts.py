"""Matplotlib charts: class probabilities, and each layer's weights before and after training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import MaxNLocator

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


def _constant(values: np.ndarray) -> float | None:
    """The one value every element has, or None."""
    low, high = float(values.min()), float(values.max())
    return low if high <= low else None


def histogram_figure(panels: Sequence[WeightPanel], bins: int, note: str | None = None) -> bytes:
    """One row per layer; per weight tensor of the layer (kernel and bias; BatchNorm's four) one
    panel per stage, left to right, each on its own x-axis, counting the weights in each bin, so the
    narrow initial weights read as well as the trained ones. A column whose tensors are all one
    constant (biases before training: all 0) is said once in the title, not drawn. PNG 1400 px wide,
    190 px per layer."""
    layers: dict[str, list[WeightPanel]] = {}
    for panel in panels:
        layers.setdefault(panel.layer, []).append(panel)
    stages = list(dict.fromkeys(stage for p in panels for stage in p.stages))
    width = max(len(tensors) for tensors in layers.values())
    columns: list[tuple[int, str]] = []
    said: list[str] = []
    for position in range(width):
        for stage in stages:
            cells = [t[position] for t in layers.values() if position < len(t) and stage in t[position].stages]
            constants = {_constant(np.asarray(c.stages[stage])) for c in cells}
            if cells and None not in constants and len(constants) == 1:
                where = "every layer" if len(cells) == len(layers) else ", ".join(c.layer for c in cells)
                value = next(iter(constants))
                said.append(f"{cells[0].parameter} {STAGE_TITLES.get(stage, stage)}: all = {value:g} in {where}")
            else:
                columns.append((position, stage))
    figure = new_figure(14.0, 1.4 + 1.9 * len(layers))
    axes = figure.subplots(len(layers), max(len(columns), 1), squeeze=False)
    small = len(columns) > 4
    for row, (layer, tensors) in enumerate(layers.items()):
        for col, (position, stage) in enumerate(columns):
            ax = axes[row][col]
            if position >= len(tensors) or stage not in tensors[position].stages:
                ax.set_axis_off()
                continue
            panel = tensors[position]
            values = np.asarray(panel.stages[stage], np.float64).ravel()
            shape = "x".join(map(str, panel.shape))
            title = f"{_short(layer)} {panel.parameter} ({shape}), {STAGE_TITLES.get(stage, stage)}"
            constant = _constant(values)
            colour = STAGE_COLOURS.get(stage, "tab:blue")
            if constant is not None:
                ax.axvline(constant, color=colour)
                title += f"\nall {values.size} = {constant:g}"
                ax.set_yticks([])
            else:
                ax.hist(values, bins=bins, color=colour, alpha=0.85)
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                title += f"\nn={values.size}, mean={values.mean():.3g}, std={values.std():.3g}"
            ax.set_title(title, fontsize=6 if small else 8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel(f"{panel.parameter} value", fontsize=7)
            if col == 0:
                ax.set_ylabel("count of weights", fontsize=8)
    # A model stored without its weights from before training has the one stage.
    when = STAGE_TITLES.get(stages[0], stages[0]) if len(stages) == 1 else "before and after training"
    lines = [f"Weights of each layer {when} (each panel on its own x-axis; bars count weights)"]
    if said:
        lines.append("Not drawn: " + "; ".join(said))
    if note:
        lines.append(note)
    figure.suptitle("\n".join(lines), fontsize=12)
    figure.tight_layout(rect=(0, 0, 1, 1 - (0.05 + 0.19 * len(lines)) / figure.get_figheight()))
    return encode(figure)


def tcav_chart(concept: str, target: str, layers: Sequence[Mapping[str, object]], alpha: float) -> bytes:
    """TCAV scores per layer: a bar at the mean score over the random sets with its standard deviation,
    a grey bar where the t-test against random CAVs is not significant (no finding), and the
    random-vs-random mean as a dashed mark. PNG 720x440."""
    figure = new_figure(7.2, 4.4)
    axes = figure.subplots()
    names = [str(layer["layer"]) for layer in layers]
    x = np.arange(len(names))
    for k, layer in enumerate(layers):
        significant = bool(layer["significant"])
        axes.bar(
            k,
            float(layer["mean"]),  # type: ignore[arg-type]
            yerr=float(layer["std"]),  # type: ignore[arg-type]
            color="tab:blue" if significant else "lightgrey",
            edgecolor="black" if significant else "grey",
            capsize=6,
            width=0.6,
        )
        axes.hlines(float(layer["random_mean"]), k - 0.35, k + 0.35, colors="tab:red", linestyles="dashed")  # type: ignore[arg-type]
        label = f"p = {float(layer['p_value']):.2g}" + ("" if significant else "\nnot significant")  # type: ignore[arg-type]
        axes.text(k, 1.02, label, ha="center", va="bottom", fontsize=8, color="black" if significant else "grey")
    axes.set_xticks(x, names)
    axes.set_ylim(0, 1.18)
    axes.set_xlabel("layer")
    axes.set_ylabel("TCAV score (fraction of the class's images)")
    axes.axhline(0.5, color="grey", linewidth=0.5)
    axes.set_title(
        f"TCAV: does '{concept}' raise the score of {target}?\n"
        f"bars: mean ± std over random sets; dashed: random CAVs; grey: not significant (p ≥ {alpha:.3g})",
        fontsize=9,
    )
    figure.tight_layout()
    return encode(figure)
