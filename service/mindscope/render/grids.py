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

from mindscope import tracing
from mindscope.render.figures import encode, new_figure, rgb_frame

COLUMNS = 9
SCALE_NOTE = "Each channel is coloured on its own scale: 0 = that channel's smallest activation, 1 = its largest."
SHARED_NOTE = "One scale for every channel (the class layer): the strongest class map stands out."
WIDTH_IN = 13.0
GRID_WIDTH_IN = 8.6  # the mosaic's share of the width, beside the input and the colour bar
TOP_IN, BOTTOM_IN = 0.55, 0.5  # the title above, the scale's note below


@dataclass(frozen=True)
class ChannelGrid:
    """values: float32 (H, W, C) of the channels shown; labels: one per channel (index or class name);
    shared_scale: one colour scale for every channel (the class layer), else one per channel."""

    title: str
    values: np.ndarray
    labels: Sequence[str]
    shared_scale: bool = False


def grid_columns(count: int, columns: int = COLUMNS) -> int:
    """Columns for `count` tiles: at most `columns`, balanced over the rows (10 tiles are 2 rows of 5,
    never 9 and a lone 1)."""
    rows = max(math.ceil(count / columns), 1)
    return max(math.ceil(count / rows), 1)


def mosaic(values: np.ndarray, columns: int = COLUMNS, shared: bool = False) -> np.ndarray:
    """(H, W, C) -> one (rows*(H+1)-1, cols*(W+1)-1) array, NaN between tiles (drawn as the
    background): each channel scaled to [0, 1] on its own, or (`shared`) the activations as they are."""
    height, width, count = values.shape
    cols = grid_columns(count, columns)
    rows = max(math.ceil(count / cols), 1)
    out = np.full((rows * (height + 1) - 1, cols * (width + 1) - 1), np.nan)
    for c in range(count):
        tile = values[..., c].astype(np.float64)
        if not shared:
            low, high = tile.min(), tile.max()
            tile = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
        row, col = divmod(c, cols)
        out[row * (height + 1) : row * (height + 1) + height, col * (width + 1) : col * (width + 1) + width] = tile
    return out


def _layout(values: np.ndarray | None, columns: int) -> tuple[float, float, float]:
    """(figure height, top, bottom) in inches and fractions, so the mosaic fills its axes' height:
    no blank band between the title and the tiles."""
    if values is None:
        grid_height = 3.0
    else:
        height, width, count = values.shape
        cols = grid_columns(count, columns)
        rows = max(math.ceil(count / cols), 1)
        # A few channels draw as tiles of at most 1.8 inches, not as large as the row would allow.
        grid_width = min(GRID_WIDTH_IN, 1.8 * cols)
        grid_height = grid_width * (rows * (height + 1) - 1) / (cols * (width + 1) - 1)
    panel = max(grid_height, 2.6)  # the input needs room too
    total = panel + TOP_IN + BOTTOM_IN
    return total, 1 - TOP_IN / total, BOTTOM_IN / total


def _draw(figure: Figure, image: np.ndarray, grid: ChannelGrid | None, columns: int, following: str = "") -> None:
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [2.6, GRID_WIDTH_IN]})
    shown = np.clip(image, 0, 1).squeeze()
    grey = None if shown.ndim == 3 else "gray"
    left.imshow(shown, cmap=grey, vmin=0, vmax=1, interpolation="nearest")
    left.set_title("input", fontsize=11)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    if grid is None:  # the animation's first frame: the input, and what comes next
        right.set_axis_off()
        right.text(0.5, 0.5, f"next: {following}" if following else "", ha="center", va="center", fontsize=12)
        figure.suptitle("From the input through the network's layers", fontsize=13)
        return
    cmap = colormaps["viridis"].with_extremes(bad="white")
    height, width, count = grid.values.shape
    tiles = mosaic(grid.values, columns, grid.shared_scale)
    low, high = (float(np.nanmin(tiles)), float(np.nanmax(tiles))) if grid.shared_scale else (0.0, 1.0)
    picture = right.imshow(tiles, cmap=cmap, vmin=low, vmax=high if high > low else low + 1, interpolation="nearest")
    right.set_anchor("NW")  # beside the input, however few the tiles
    cols = grid_columns(count, columns)
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
    bar = figure.colorbar(picture, ax=right, fraction=0.03, pad=0.01, shrink=0.8, panchor=(0.0, 1.0))
    bar.set_label("activation" if grid.shared_scale else "activation (per-channel scale)", fontsize=9)
    figure.suptitle(grid.title, fontsize=13)
    figure.text(
        0.5, 0.15 / figure.get_figheight(), SHARED_NOTE if grid.shared_scale else SCALE_NOTE, ha="center", fontsize=9
    )


def activation_grid(image: np.ndarray, grid: ChannelGrid, columns: int = COLUMNS) -> bytes:
    """image: float32 (H, W, C) in [0, 1] -> PNG: the input beside the labelled, colour-scaled channels."""
    height, top, bottom = _layout(grid.values, columns)
    figure = new_figure(WIDTH_IN, height)
    _draw(figure, image, grid, columns)
    figure.subplots_adjust(left=0.01, right=0.94, top=top, bottom=bottom, wspace=0.04)
    return encode(figure)


def activation_animation(
    image: np.ndarray, grids: Sequence[ChannelGrid], columns: int = COLUMNS, frame_ms: int = 1200
) -> bytes:
    """GIF: the input, then each layer's grid; every frame the same size, labelled and colour-scaled."""
    tallest = max(grids, key=lambda g: _layout(g.values, columns)[0]).values if grids else None
    height, top, bottom = _layout(tallest, columns)
    following = ", ".join(g.title.split(" ")[0] for g in grids)
    pictures = []
    with tracing.span("render", format="gif"):
        for grid in [None, *grids]:
            figure = new_figure(WIDTH_IN, height)
            _draw(figure, image, grid, columns, following)
            figure.subplots_adjust(left=0.01, right=0.94, top=top, bottom=bottom, wspace=0.04)
            pictures.append(Image.fromarray(rgb_frame(figure)))
        buffer = io.BytesIO()
        pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0)
        return buffer.getvalue()
