"""Attribution pictures: input | heatmap | overlay, and the interior-gradients strip."""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from mindscope.render.encode import BACKGROUND, MARGIN, colorize, png_bytes, to_uint8, upscale

Sign = Literal["all", "positive", "negative", "absolute"]
PANEL = 256
LABEL = 16


def attribution_map(
    attributions: np.ndarray, sign: Sign, clip_percentile: float
) -> tuple[np.ndarray, str, float, float]:
    """(H, W, C) attributions -> (H, W) map, colour map, low, high after percentile clipping."""
    summed = attributions.sum(axis=-1)
    if sign == "positive":
        values, cmap = np.maximum(summed, 0), "inferno"
    elif sign == "negative":
        values, cmap = np.maximum(-summed, 0), "inferno"
    elif sign == "absolute":
        values, cmap = np.abs(summed), "inferno"
    else:
        values, cmap = summed, "RdBu_r"
    bound = float(np.percentile(np.abs(values), clip_percentile)) or 1e-12
    low = -bound if sign == "all" else 0.0
    return values, cmap, low, bound


def figure_size(panels: int, panel: int = PANEL) -> tuple[int, int]:
    return MARGIN + panels * (panel + MARGIN), MARGIN + panel + LABEL + MARGIN


def _panels(pictures: list[tuple[str, Image.Image]]) -> bytes:
    canvas = Image.new("RGB", figure_size(len(pictures)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (title, picture) in enumerate(pictures):
        x = MARGIN + i * (PANEL + MARGIN)
        canvas.paste(picture, (x, MARGIN))
        draw.text((x, MARGIN + PANEL + 3), title, fill=(0, 0, 0))
    return png_bytes(canvas)


def attribution_figure(
    image: np.ndarray, attributions: np.ndarray, sign: Sign = "all", clip_percentile: float = 99.0
) -> bytes:
    """image, attributions: float32 (32, 32, 3) -> PNG of `figure_size(3)`: input | heatmap | overlay."""
    values, cmap, low, high = attribution_map(attributions, sign, clip_percentile)
    heat = colorize(values, cmap, low, high)
    gray = to_uint8(image).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    strength = np.clip(np.abs(values) / high, 0.0, 1.0)[..., None] * 0.8
    overlay = (gray * (1 - strength) + heat * strength).round().astype(np.uint8)
    return _panels(
        [
            ("input", upscale(to_uint8(image), PANEL)),
            (f"attributions ({sign}, p{clip_percentile:g})", upscale(heat, PANEL)),
            ("overlay", upscale(overlay, PANEL)),
        ]
    )


def interior_strip(alphas: np.ndarray, gradients: np.ndarray, outputs: np.ndarray) -> bytes:
    """gradients: float32 (A, 32, 32, 3) -> PNG of `figure_size(A)`, one |gradient| map per alpha.

    Each map is scaled to its own 99th percentile: the gradients shrink by orders of magnitude as
    alpha grows (saturation), which is the point of the figure, so a shared scale would hide them.
    """
    pictures = []
    for alpha, grads, output in zip(alphas, gradients, outputs, strict=True):
        magnitude = np.abs(grads).sum(axis=-1)
        high = float(np.percentile(magnitude, 99)) or 1e-12
        pictures.append((f"a={alpha:.2f} p={output:.3f}", upscale(colorize(magnitude, "inferno", 0.0, high), PANEL)))
    return _panels(pictures)
