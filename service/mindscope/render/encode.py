"""Shared pieces: PNG encoding, colour maps and scaling of arrays to pixels."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

MARGIN = 8
BACKGROUND = (255, 255, 255)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def colorize(
    values: np.ndarray, cmap: str = "viridis", low: float | None = None, high: float | None = None
) -> np.ndarray:
    """float (H, W) -> uint8 (H, W, 3), scaled from [low, high] (default: the array's own range)."""
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, dtype=np.float64)
    rgba = colormaps[cmap](np.clip(scaled, 0.0, 1.0))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def upscale(pixels: np.ndarray, size: int) -> Image.Image:
    """uint8 (H, W, 3) -> a `size` x `size` image with hard pixel edges (nearest neighbour)."""
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float (H, W, 3) in [0, 1] -> uint8."""
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
