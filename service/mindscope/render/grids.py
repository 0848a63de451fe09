"""Activation maps: a labelled grid of channels beside the input, and the GIF through the layers."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from mindscope.render.figures import encode, new_figure, rgb_frame

COLUMNS = 9
SCALE_NOTE = "Each channel is coloured on its own scale: 0 = that channel's smallest activation, 1 = its largest."


@dataclass(frozen=True)
class ChannelGrid:
    """values: float32 (H, W, C) of the channels shown; labels: one per channel (index or class name)."""

    title: str
    values: np.ndarray
    labels: Sequence[str]


def mosaic(values: np.ndarray, columns: int = COLUMNS) -> np.ndarray:
    """(H, W, C) -> one (rows*(H+1)-1, cols*(W+1)-1) array, each channel scaled to [0, 1] on its own,
    NaN between tiles (drawn as the background)."""
    height, width, count = values.shape
    cols = min(columns, max(count, 1))
    rows = max(math.ceil(count / cols), 1)
    out = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), np.nan)
    for c in range(count):
        tile = values[..., c].astype(np.float64)
        low, high = tile.min(), tile.max()
        scaled = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
        row, col = divmod(c, cols)
        out[row * (height + 1) : row * (height + 1) + height, col * (width + 1) : col * (width + 1) + width] = scaled
    return out


def _draw(figure: Figure, image: np.ndarray, grid: ChannelGrid | None, columns: int) -> None:
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 3.4]})
    shown = np.clip(image, 0, 1).squeeze()
    grey = None if shown.ndim == 3 else "gray"
    left.imshow(shown, cmap=grey, vmin=0, vmax=1, interpolation="nearest")
    left.set_title("input", fontsize=11)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    if grid is None:  # the animation's first frame: the input, large
        right.imshow(shown, cmap=grey, vmin=0, vmax=1, interpolation="nearest")
        right.set_title("the input, before any layer", fontsize=11)
        figure.suptitle("From the input through the network's layers", fontsize=13)
        return
    cmap = colormaps["viridis"].with_extremes(bad="white")
    height, width, count = grid.values.shape
    picture = right.imshow(mosaic(grid.values, columns), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    cols = min(columns, max(count, 1))
    for c, label in enumerate(grid.labels):
        row, col = divmod(c, cols)
        right.text(
            col * (width + 1) + 0.5,
            row * (height + 1) + 0.5,
            label,
            color="white",
            fontsize=7,
            va="top",
            ha="left",
            bbox={"facecolor": "black", "alpha": 0.55, "pad": 1, "linewidth": 0},
        )
    for side in right.spines.values():
        side.set_visible(False)
    bar = figure.colorbar(picture, ax=right, fraction=0.03, pad=0.01, shrink=0.8)
    bar.set_label("activation (per-channel scale)", fontsize=9)
    figure.suptitle(grid.title, fontsize=13)
    figure.text(0.5, 0.02, SCALE_NOTE, ha="center", fontsize=9)


def _size(channels: int, columns: int) -> tuple[float, float]:
    rows = max(math.ceil(channels / min(columns, max(channels, 1))), 1)
    return 13.0, 1.3 + 1.15 * max(rows, 3)


def activation_grid(image: np.ndarray, grid: ChannelGrid, columns: int = COLUMNS) -> bytes:
    """image: float32 (H, W, C) in [0, 1] -> PNG: the input beside the labelled, colour-scaled channels."""
    figure = new_figure(*_size(grid.values.shape[-1], columns))
    _draw(figure, image, grid, columns)
    figure.subplots_adjust(left=0.01, right=0.97, top=0.88, bottom=0.08, wspace=0.04)
    return encode(figure)


def activation_animation(
    image: np.ndarray, grids: Sequence[ChannelGrid], columns: int = COLUMNS, frame_ms: int = 1200
) -> bytes:
    """GIF: the input, then each layer's grid; every frame the same size, labelled and colour-scaled."""
    size = _size(max(g.values.shape[-1] for g in grids) if grids else 1, columns)
    pictures = []
    for grid in [None, *grids]:
        figure = new_figure(*size)
        _draw(figure, image, grid, columns)
        figure.subplots_adjust(left=0.01, right=0.97, top=0.88, bottom=0.08, wspace=0.04)
        pictures.append(Image.fromarray(rgb_frame(figure)))
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()
